//! The request as the provider sent it: nothing here is normalised, decoded or re-serialised,
//! because every scheme signs exact bytes.

use http::{HeaderMap, HeaderName};

use crate::reject::Reject;

/// A header a scheme reads, named once at compile time: the lookup key and the name a
/// [`Reject`] reports.
#[derive(Debug)]
pub struct Known {
    name: HeaderName,
    label: &'static str,
}

impl Known {
    /// `label` must be a lowercase, valid header name (checked at compile time in a `static`).
    pub const fn new(label: &'static str) -> Self {
        Known {
            name: HeaderName::from_static(label),
            label,
        }
    }

    /// The name as reported in rejections.
    pub const fn label(&self) -> &'static str {
        self.label
    }
}

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
        single(self.headers.get_all(name).iter(), name)
    }

    /// [`Request::header`] by a prebuilt name: the same answers without parsing and validating
    /// the name on every request (a measurable share of a short verification).
    pub fn header_named(&self, name: &Known) -> Result<Option<&'a str>, Reject> {
        single(self.headers.get_all(&name.name).iter(), name.label)
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

/// The one value of a header, as text.
fn single<'a>(
    mut values: http::header::ValueIter<'a, http::HeaderValue>,
    label: &'static str,
) -> Result<Option<&'a str>, Reject> {
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Reject::HeaderMalformed {
            header: label,
            why: "repeated",
        });
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| Reject::HeaderMalformed {
            header: label,
            why: "not visible ASCII",
        })
}
