//! Stage 1: pick the route by path, segment-wise, longest match first (the table is sorted).

use tollgate_config::{Config, Route};

use crate::GatewayError;

/// The route whose `path` is the request path or a parent segment of it.
pub fn select<'a>(table: &'a Config, path: &str) -> Result<&'a Route, GatewayError> {
    table
        .routes
        .iter()
        .find(|r| matches_segment(&r.path, path))
        .ok_or(GatewayError::NotFound)
}

/// `/twilio` matches `/twilio` and `/twilio/voice`, not `/twilio-sk`.
pub fn matches_segment(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::matches_segment;

    #[test]
    fn segment_wise() {
        assert!(matches_segment("/twilio", "/twilio"));
        assert!(matches_segment("/twilio", "/twilio/voice"));
        assert!(!matches_segment("/twilio", "/twilio-sk"));
        assert!(!matches_segment("/twilio/voice", "/twilio"));
        assert!(matches_segment("/", "/anything"));
    }
}
