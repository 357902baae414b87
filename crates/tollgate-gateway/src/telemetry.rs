//! Log set-up: JSON or pretty, level from `RUST_LOG` (default `info`). Audit lines use the target
//! `tollgate::audit`. Nothing logged anywhere carries a secret or a received signature: stages
//! log reason codes, labels and addresses only.

use tollgate_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber (once per process; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}
