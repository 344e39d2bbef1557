//! `switchboard token`: mints an access token (an HS256 JWT) with the server's API key.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;

const EXAMPLES: &str = "\
Examples:
  switchboard token --room standup --identity ann --publish --subscribe
      a participant of room \"standup\" (open /r/standup?token=TOKEN)
  switchboard token --room standup --identity viewer --subscribe --ttl 15m
      watch or join without sending media
  switchboard token --room stage --identity obs --publish --ttl 30d
      a WHIP encoder (Authorization: Bearer TOKEN)
  switchboard token --room '*' --identity ops --admin
      the admin API (/api/v1) and /metrics
  switchboard token --room '*' --identity me --publish --subscribe
      send and recv (their room comes from the pairing code)

The key and secret come from --api-key/--api-secret(-file), SWITCHBOARD_API_KEY and
SWITCHBOARD_API_SECRET, or the [auth] table of --config, as for `serve`.
The token goes to stdout; anyone holding it has its grants until it expires.";

/// Options of `switchboard token`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub(crate) struct TokenArgs {
    /// The room the token is for, or '*' for any room
    #[arg(long, value_name = "ROOM")]
    room: String,

    /// Who the bearer is (shown to administrators; not the display name)
    #[arg(long, value_name = "NAME")]
    identity: String,

    /// May send media: WHIP ingest, camera and microphone through the SFU
    #[arg(long)]
    publish: bool,

    /// May join the room over signaling and receive media (calls, WHEP, file transfers)
    #[arg(long)]
    subscribe: bool,

    /// May use the admin API and /metrics
    #[arg(long)]
    admin: bool,

    /// How long the token is valid: 90s, 15m, 1h, 7d
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    ttl: String,

    /// TOML configuration file whose [auth] table holds the key and secret
    #[arg(long, short = 'c', env = "SWITCHBOARD_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// API key (the token's issuer)
    #[arg(long, env = "SWITCHBOARD_API_KEY", value_name = "KEY")]
    api_key: Option<String>,

    /// The API key's secret
    #[arg(
        long,
        env = "SWITCHBOARD_API_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    api_secret: Option<String>,

    /// File holding the API secret
    #[arg(long, value_name = "FILE", conflicts_with = "api_secret")]
    api_secret_file: Option<PathBuf>,
}

pub(crate) fn run(args: TokenArgs) -> anyhow::Result<()> {
    if !(args.publish || args.subscribe || args.admin) {
        bail!("give at least one grant: --publish, --subscribe and/or --admin");
    }
    if args.room != auth::ANY_ROOM {
        signal::RoomName::parse(&args.room)
            .map_err(|why| anyhow::anyhow!("--room: the room name {why}"))?;
    }
    if args.identity.is_empty() || args.identity.len() > 128 {
        bail!("--identity must be 1 to 128 bytes");
    }
    let ttl = auth::parse_duration(&args.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    let mut config = match &args.config {
        Some(path) => server::Config::from_file(path)?.auth,
        None => server::AuthConfig::default(),
    };
    if let Some(key) = args.api_key {
        config.api_key = Some(key);
    }
    if let Some(secret) = args.api_secret {
        config.api_secret = Some(secret);
        config.api_secret_file = None;
    }
    if let Some(file) = args.api_secret_file {
        config.api_secret_file = Some(file);
        config.api_secret = None;
    }
    let key = config.api_key()?.context(
        "no API key: pass --api-key and --api-secret (or SWITCHBOARD_API_KEY and \
         SWITCHBOARD_API_SECRET, or --config with an [auth] table)",
    )?;
    let now = server::access::unix_now();
    let claims = auth::Claims {
        iss: key.key().to_owned(),
        sub: args.identity,
        nbf: Some(now),
        exp: now.saturating_add(ttl),
        room: args.room,
        grants: auth::Grants {
            publish: args.publish,
            subscribe: args.subscribe,
            admin: args.admin,
        },
    };
    println!("{}", key.mint(&claims));
    Ok(())
}
