//! How served media presents itself: the `Content-Type` kept from an upload and the
//! `Content-Disposition` sent with a download.
//!
//! Media is served `inline` only when its type is on the spec's list of types that browsers
//! will not run as a page (images, audio, video, plain text, …); everything else is an
//! `attachment`. File names are sent as a quoted `filename="…"` when they are printable ASCII,
//! and as RFC 5987 `filename*=utf-8''…` otherwise, so that no name can break out of the header.

/// The type given to uploads without a usable `Content-Type`.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The longest `Content-Type` kept from an upload.
const MAX_CONTENT_TYPE_LEN: usize = 255;

/// Content types that may be served `inline` (the spec's "Serving inline content" list).
const INLINE_TYPES: &[&str] = &[
    "text/css",
    "text/plain",
    "text/csv",
    "application/json",
    "application/ld+json",
    "image/jpeg",
    "image/gif",
    "image/png",
    "image/apng",
    "image/webp",
    "image/avif",
    "video/mp4",
    "video/webm",
    "video/ogg",
    "video/quicktime",
    "audio/mp4",
    "audio/webm",
    "audio/aac",
    "audio/mpeg",
    "audio/ogg",
    "audio/wave",
    "audio/wav",
    "audio/x-wav",
    "audio/x-pn-wav",
    "audio/flac",
    "audio/x-flac",
];

/// The content type to keep for an upload: the client's `Content-Type` if it is a plausible
/// header value, [`DEFAULT_CONTENT_TYPE`] otherwise.
pub fn upload_content_type(header: Option<&str>) -> String {
    match header.map(str::trim) {
        Some(value)
            if !value.is_empty()
                && value.len() <= MAX_CONTENT_TYPE_LEN
                && value.contains('/')
                && value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) =>
        {
            value.to_owned()
        }
        _ => DEFAULT_CONTENT_TYPE.to_owned(),
    }
}

/// Whether media of `content_type` may be shown inline: its essence (the part before any
/// parameters, compared without case) is on the spec's list.
pub fn is_inline_safe(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    INLINE_TYPES.iter().any(|safe| safe.eq_ignore_ascii_case(essence))
}

/// The `Content-Disposition` header value for media of `content_type`, naming `filename`
/// when there is one.
pub fn content_disposition(content_type: &str, filename: Option<&str>) -> String {
    let kind = if is_inline_safe(content_type) { "inline" } else { "attachment" };
    match filename {
        Some(name) if !name.is_empty() => format!("{kind}; {}", filename_parameter(name)),
        _ => kind.to_owned(),
    }
}

/// `filename="…"` for printable ASCII names (quotes and backslashes escaped), and
/// `filename*=utf-8''…` (percent-encoded) for names with other characters.
pub fn filename_parameter(name: &str) -> String {
    if name.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        let mut quoted = String::with_capacity(name.len() + 2);
        for c in name.chars() {
            if c == '"' || c == '\\' {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        format!("filename=\"{quoted}\"")
    } else {
        format!("filename*=utf-8''{}", percent_encode_attr(name))
    }
}

/// RFC 5987 `attr-char` encoding: letters, digits and ``!#$&+-.^_`|~`` stay, every other
/// byte of the UTF-8 becomes `%XX`.
fn percent_encode_attr(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'!' | b'#' | b'$' | b'&' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~');
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_only_for_safe_types() {
        let cases = [
            ("image/png", true),
            ("IMAGE/PNG", true),
            ("text/plain; charset=utf-8", true),
            ("video/mp4", true),
            ("audio/x-flac", true),
            ("text/html", false),
            ("image/svg+xml", false),
            ("application/pdf", false),
            ("application/octet-stream", false),
            ("application/javascript", false),
            ("text/plainx", false),
            ("", false),
        ];
        for (content_type, inline) in cases {
            assert_eq!(is_inline_safe(content_type), inline, "{content_type}");
        }
    }

    #[test]
    fn dispositions() {
        let cases = [
            ("image/png", None, "inline"),
            ("image/png", Some(""), "inline"),
            ("image/png", Some("cat.png"), "inline; filename=\"cat.png\""),
            ("text/html", Some("page.html"), "attachment; filename=\"page.html\""),
            ("application/octet-stream", None, "attachment"),
            ("text/plain", Some("say \"hi\".txt"), "inline; filename=\"say \\\"hi\\\".txt\""),
            ("text/plain", Some("back\\slash"), "inline; filename=\"back\\\\slash\""),
            ("image/jpeg", Some("Straße.jpg"), "inline; filename*=utf-8''Stra%C3%9Fe.jpg"),
            ("image/jpeg", Some("日本.jpg"), "inline; filename*=utf-8''%E6%97%A5%E6%9C%AC.jpg"),
            // Control characters could split the header: they are encoded too.
            ("text/plain", Some("a\r\nSet-Cookie: x"), "inline; filename*=utf-8''a%0D%0ASet-Cookie%3A%20x"),
            ("application/pdf", Some("War and Peace.pdf"), "attachment; filename=\"War and Peace.pdf\""),
        ];
        for (content_type, name, expected) in cases {
            assert_eq!(content_disposition(content_type, name), expected, "{content_type} {name:?}");
        }
    }

    #[test]
    fn every_disposition_is_a_valid_header_value() {
        for name in ["plain", "ünïcödé", "tab\there", "nul\0byte", "emoji 🎉.png", "\"quoted\""] {
            let value = content_disposition("image/png", Some(name));
            assert!(value.bytes().all(|b| b == b' ' || b.is_ascii_graphic()), "{value:?}");
        }
    }

    #[test]
    fn upload_content_types() {
        assert_eq!(upload_content_type(Some("image/png")), "image/png");
        assert_eq!(upload_content_type(Some(" text/plain; charset=utf-8 ")), "text/plain; charset=utf-8");
        assert_eq!(upload_content_type(None), DEFAULT_CONTENT_TYPE);
        assert_eq!(upload_content_type(Some("")), DEFAULT_CONTENT_TYPE);
        assert_eq!(upload_content_type(Some("nonsense")), DEFAULT_CONTENT_TYPE);
        assert_eq!(upload_content_type(Some("image/pñg")), DEFAULT_CONTENT_TYPE);
        assert_eq!(upload_content_type(Some(&format!("a/{}", "b".repeat(300)))), DEFAULT_CONTENT_TYPE);
    }
}
