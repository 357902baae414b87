//! The request as the provider sent it: nothing here is normalised, decoded or re-serialised,
//! because every scheme signs exact bytes.

use http::HeaderMap;

use crate::reject::Reject;

/// A received webhook, borrowed from wherever the caller keeps it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method as received (`POST`, `GET`, ...).
    pub method: &'a str,
    /// The public URL the provider called: scheme, authority, raw path and raw query, exactly as the
    /// provider requested them (the caller rebuilds it from configuration, never from a normaliser).
    pub url: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Raw body bytes.
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The single value of a header as text. `Ok(None)` when absent; a repeated header or one that
    /// is not visible ASCII is [`Reject::HeaderMalformed`], because two candidate signatures or
    /// timestamps make a request ambiguous.
    pub fn header(&self, name: &'static str) -> Result<Option<&'a str>, Reject> {
        let mut values = self.headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Reject::HeaderMalformed {
                header: name,
                why: "repeated",
            });
        }
        first
            .to_str()
            .map(Some)
            .map_err(|_| Reject::HeaderMalformed {
                header: name,
                why: "not visible ASCII",
            })
    }

    /// Like [`Request::header`], but absence is `missing`.
    pub fn require_header(&self, name: &'static str, missing: Reject) -> Result<&'a str, Reject> {
        self.header(name)?.ok_or(missing)
    }

    /// The media type of `Content-Type`, lowercased comparison left to the caller; parameters
    /// (`; charset=...`) removed. `None` when absent or not ASCII.
    pub fn media_type(&self) -> Option<&'a str> {
        let ct = self
            .headers
            .get(http::header::CONTENT_TYPE)?
            .to_str()
            .ok()?;
        Some(ct.split(';').next().unwrap_or("").trim())
    }

    /// True when the body is `application/x-www-form-urlencoded`.
    pub fn is_form(&self) -> bool {
        self.media_type()
            .is_some_and(|m| m.eq_ignore_ascii_case("application/x-www-form-urlencoded"))
    }

    /// The same request seen at another URL (used by diagnosis to try variants).
    pub fn with_url<'b>(&self, url: &'b str) -> Request<'b>
    where
        'a: 'b,
    {
        Request { url, ..*self }
    }

    /// The same request with another body (used by diagnosis to try variants).
    pub fn with_body<'b>(&self, body: &'b [u8]) -> Request<'b>
    where
        'a: 'b,
    {
        Request { body, ..*self }
    }
}
