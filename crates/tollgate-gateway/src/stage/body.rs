//! Stage 3: read the body whole, bounded in size (413) and time (408). The head's own timeout is
//! hyper's `header_read_timeout`, set in [`crate::server`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::GatewayError;

/// Collects the body.
pub async fn read(
    body: Incoming,
    content_length: Option<u64>,
    max: u64,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    // Refuse a declared oversize body before reading a byte of it.
    if content_length.is_some_and(|n| n > max) {
        return Err(GatewayError::BodyTooLarge);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collected = tokio::time::timeout(timeout, Limited::new(body, limit).collect())
        .await
        .map_err(|_| GatewayError::BodyTimeout)?;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(h) => Err(GatewayError::BodyRead(*h)),
            // The only other error Limited produces is its length error.
            Err(_) => Err(GatewayError::BodyTooLarge),
        },
    }
}
