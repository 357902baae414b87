//! One file per pipeline stage, in the order [`crate::pipeline`] runs them. Each returns
//! `Err(GatewayError)`; none builds a response for a failure.

pub mod allow_ips;
pub mod body;
pub mod client_ip;
pub mod enqueue;
pub mod forward;
pub mod public_url;
pub mod rate_limit;
pub mod replay;
pub mod route;
pub mod verify;
