//! `switchboard turn`: the STUN/TURN server alone.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use server::{Config, TurnHandle};
use tracing::info;

use crate::turn_args::TurnArgs;

/// Options of `switchboard turn`.
#[derive(Debug, Args)]
pub(crate) struct TurnCmdArgs {
    /// TOML configuration file; only its `[turn]` table is used, and flags override it
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(flatten)]
    turn: TurnArgs,
}

pub(crate) fn run(args: TurnCmdArgs) -> anyhow::Result<()> {
    let (mut config, mut tls) = match &args.config {
        Some(path) => {
            let file = Config::from_file(path)?;
            (file.turn, file.tls)
        }
        None => (server::TurnConfig::default(), server::TlsConfig::default()),
    };
    args.turn.apply(&mut config, &mut tls);
    if tls.self_signed {
        let hosts = server::tls::self_signed_hosts(config.listen, config.external_host.as_slice());
        tls.generated = Some(
            server::tls::self_signed(&hosts)
                .map_err(|e| anyhow::anyhow!("cannot generate a certificate: {e}"))?,
        );
    }
    let identity = tls.load()?.map(|(_, identity)| identity);
    let settings = config.settings(&tls)?;
    if settings.credentials.is_empty() {
        anyhow::bail!("no TURN credentials: give --turn-user USER:PASS or --turn-secret SECRET");
    }
    crate::serve::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    // Listening for signals needs the runtime's context; they are caught from here on.
    let shutdown = {
        let _context = runtime.enter();
        crate::serve::shutdown_signal()
    };
    let handle = TurnHandle::start(settings)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = handle.local_addr();
    if let Some(id) = &identity {
        crate::serve::print_tls_identity(id);
    }
    println!("switchboard: TURN listening on {addr} (udp, tcp)");
    if let Some(tls) = handle.tls_addr() {
        println!("switchboard: TURN listening on {tls} (tls)");
    }
    runtime.block_on(shutdown);
    let stats = handle.shutdown();
    info!(
        allocations = stats.allocations_created,
        to_peers = stats.packets_to_peers,
        to_clients = stats.packets_to_clients,
        "TURN stopped"
    );
    Ok(())
}
