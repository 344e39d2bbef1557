//! The `switchboard` command line.

mod loadtest;
mod serve;
mod share;
mod stream;
mod token_cmd;
mod turn_args;
mod turn_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Switchboard: self-hosted WebRTC calls, signaling and more, in one binary.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about, long_about = None)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `server=debug,signal=trace`.
    /// (Default: `info` for `serve` and `turn`, `warn` for `send` and `recv`.)
    #[arg(long, global = true, env = "SWITCHBOARD_LOG")]
    log: Option<String>,

    /// Log line format on stderr: `text` or `json` (one object per line). For `serve` this
    /// overrides `log_format` in the config file. [default: text]
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_LOG_FORMAT",
        value_name = "FORMAT"
    )]
    log_format: Option<LogFormatArg>,

    /// For send, recv, stream and loadtest with an https:// server: trust exactly the
    /// certificate with this SHA-256 (64 hex digits, as `serve --tls-self-signed` prints it)
    /// instead of checking it against the web's root certificates
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_SERVER_CERT_SHA256",
        value_name = "HEX"
    )]
    server_cert_sha256: Option<String>,

    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server: web app, WebSocket signaling, STUN/TURN, health check.
    Serve(serve::ServeArgs),
    /// Run only the STUN/TURN server.
    Turn(turn_cmd::TurnCmdArgs),
    /// Send files and folders to another machine or a browser; prints a code to receive with.
    Send(share::SendArgs),
    /// Receive files with the code the sender shows.
    Recv(share::RecvArgs),
    /// Publish media files (IVF/VP8, H.264, Ogg/Opus) into a room through WHIP, in real time.
    Stream(stream::StreamArgs),
    /// Load-test an SFU: native WHIP publishers, WHEP subscribers and meeting members with
    /// synthetic media.
    Loadtest(loadtest::LoadtestArgs),
    /// Mint an access token for a room (when the server has an API key).
    Token(token_cmd::TokenArgs),
}

/// `--log-format` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for server::LogFormat {
    fn from(arg: LogFormatArg) -> Self {
        match arg {
            LogFormatArg::Text => server::LogFormat::Text,
            LogFormatArg::Json => server::LogFormat::Json,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Send(_)
        | Command::Recv(_)
        | Command::Stream(_)
        | Command::Loadtest(_)
        | Command::Token(_) => "warn",
        _ => "info",
    };
    let filter = cli.log.unwrap_or_else(|| default_log.to_owned());
    let flag_format = cli.log_format.map(server::LogFormat::from);
    // `serve` installs the subscriber once it has read its config file (which may set the format).
    if !matches!(cli.command, Command::Serve(_)) {
        init_tracing(&filter, flag_format.unwrap_or_default());
    }
    if let Some(pin) = &cli.server_cert_sha256 {
        match peer::tls::ServerTrust::pinned_from_hex(pin) {
            Ok(trust) => peer::tls::set_server_trust(trust),
            Err(err) => {
                eprintln!("error: --server-cert-sha256: {err:#}");
                return ExitCode::from(2);
            }
        }
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args, |file_format| {
            init_tracing(&filter, flag_format.unwrap_or(file_format));
        }),
        Command::Turn(args) => turn_cmd::run(args),
        Command::Send(args) => share::run_send(args),
        Command::Recv(args) => share::run_recv(args),
        Command::Stream(args) => stream::run(args),
        Command::Loadtest(args) => loadtest::run(args),
        Command::Token(args) => token_cmd::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(filter: &str, format: server::LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|err| {
        eprintln!("warning: bad --log filter {filter:?} ({err}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        server::LogFormat::Text => builder.init(),
        // One flat object per line: the event's fields beside `message`, no span list.
        server::LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}
