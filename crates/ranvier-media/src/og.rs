//! OpenGraph data from an HTML page, for URL previews.
//!
//! The page is run through html5ever's tokenizer (the HTML standard's tokenizer, so comments,
//! entities, attribute quoting and odd markup are read as browsers read them); no tree is
//! built. `<script>`, `<style>` and the like are switched to their raw-text states, so that
//! markup inside them is not mistaken for tags. What is kept:
//! - `<meta property="og:…" content="…">` (or `name="og:…"`), the first of each key;
//! - `<title>` as `og:title`, and `<meta name="description">` as `og:description`, when the
//!   page has no OpenGraph value for them.
//!
//! Keys longer than [`MAX_KEY_LEN`], values longer than [`MAX_VALUE_LEN`] and keys beyond
//! [`MAX_KEYS`] are dropped, so that a page cannot make a preview arbitrarily large.

use std::{cell::RefCell, collections::BTreeMap};

use html5ever::{
    tendril::StrTendril,
    tokenizer::{BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts, states::RawKind},
};

/// The longest key kept.
pub const MAX_KEY_LEN: usize = 50;
/// The longest value kept, in characters.
pub const MAX_VALUE_LEN: usize = 1000;
/// The most keys kept.
pub const MAX_KEYS: usize = 50;

/// The OpenGraph (and fallback) values of `html`.
pub fn parse(html: &str) -> BTreeMap<String, String> {
    let sink = Sink::default();
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(html));
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    let found = tokenizer.sink.found.into_inner();

    let mut og = found.og;
    if !og.contains_key("og:title")
        && let Some(title) = found.title.map(|title| collapse_whitespace(&title)).filter(|title| !title.is_empty())
    {
        insert(&mut og, "og:title", &title);
    }
    if !og.contains_key("og:description")
        && let Some(description) = found.description.filter(|d| !d.trim().is_empty())
    {
        insert(&mut og, "og:description", description.trim());
    }
    og
}

#[derive(Default)]
struct Found {
    og: BTreeMap<String, String>,
    title: Option<String>,
    description: Option<String>,
    /// Inside the first `<title>`, collecting its text.
    in_title: bool,
    title_text: String,
}

#[derive(Default)]
struct Sink {
    found: RefCell<Found>,
}

/// Keep `key` = `value` unless the key is already there, or either is too long, or there are
/// enough keys.
fn insert(og: &mut BTreeMap<String, String>, key: &str, value: &str) {
    if key.len() > MAX_KEY_LEN || value.chars().count() > MAX_VALUE_LEN || og.len() >= MAX_KEYS {
        return;
    }
    og.entry(key.to_owned()).or_insert_with(|| value.to_owned());
}

fn collapse_whitespace(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl TokenSink for Sink {
    type Handle = ();

    fn process_token(&self, token: Token, _line_number: u64) -> TokenSinkResult<()> {
        let mut found = self.found.borrow_mut();
        match token {
            Token::TagToken(tag) if tag.kind == TagKind::StartTag => {
                let attr = |name: &str| {
                    tag.attrs.iter().find(|attr| attr.name.local.as_ref() == name).map(|attr| attr.value.to_string())
                };
                match tag.name.as_ref() {
                    "meta" => {
                        let content = attr("content");
                        let key = attr("property").or_else(|| attr("name")).map(|key| key.trim().to_ascii_lowercase());
                        if let (Some(key), Some(content)) = (key, content) {
                            if key.starts_with("og:") {
                                insert(&mut found.og, &key, content.trim());
                            } else if key == "description" && found.description.is_none() {
                                found.description = Some(content);
                            }
                        }
                    }
                    "title" => {
                        if found.title.is_none() && !tag.self_closing {
                            found.in_title = true;
                        }
                        return TokenSinkResult::RawData(RawKind::Rcdata);
                    }
                    "textarea" => return TokenSinkResult::RawData(RawKind::Rcdata),
                    "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
                    "style" | "xmp" | "iframe" | "noembed" | "noframes" => {
                        return TokenSinkResult::RawData(RawKind::Rawtext);
                    }
                    "plaintext" => return TokenSinkResult::Plaintext,
                    _ => {}
                }
            }
            Token::TagToken(tag) if tag.kind == TagKind::EndTag && tag.name.as_ref() == "title" && found.in_title => {
                found.in_title = false;
                found.title = Some(std::mem::take(&mut found.title_text));
            }
            // Bounded: a title longer than a value could ever be is not kept anyway.
            Token::CharacterTokens(text) if found.in_title && found.title_text.len() <= MAX_VALUE_LEN * 4 => {
                found.title_text.push_str(&text);
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opengraph_tags_and_fallbacks() {
        let html = r#"<!doctype html><html><head>
            <title>  The   page
               title </title>
            <meta property="og:title" content="OG &amp; title">
            <meta property="og:title" content="second title is ignored">
            <META PROPERTY="og:Image" CONTENT="/img.png">
            <meta property="og:image:width" content="640">
            <meta name="description" content="A description">
            </head><body><p>text</p></body></html>"#;
        let og = parse(html);
        assert_eq!(og.get("og:title").map(String::as_str), Some("OG & title"));
        assert_eq!(og.get("og:image").map(String::as_str), Some("/img.png"));
        assert_eq!(og.get("og:image:width").map(String::as_str), Some("640"));
        assert_eq!(og.get("og:description").map(String::as_str), Some("A description"));

        let og = parse("<html><head><title>Just  a\ntitle</title><meta name=description content='plain'>");
        assert_eq!(og.get("og:title").map(String::as_str), Some("Just a title"));
        assert_eq!(og.get("og:description").map(String::as_str), Some("plain"));
    }

    #[test]
    fn markup_inside_scripts_comments_and_styles_is_not_read() {
        let html = r#"<head><script>document.write('<meta property="og:title" content="from script">')</script>
            <!-- <meta property="og:description" content="from a comment"> -->
            <style>/* <meta property="og:image" content="x"> */</style>
            <title>Real <b>title</b></title></head>"#;
        let og = parse(html);
        assert_eq!(og.get("og:title").map(String::as_str), Some("Real <b>title</b>"));
        assert!(!og.contains_key("og:description") && !og.contains_key("og:image"), "{og:?}");
    }

    #[test]
    fn oversized_values_and_garbage_are_dropped() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let html = format!(
            "<meta property='og:title' content='{long}'><meta property='og:{}' content='v'>",
            "k".repeat(MAX_KEY_LEN)
        );
        let og = parse(&html);
        assert!(og.is_empty(), "{og:?}");
        let many: String = (0..200).map(|i| format!("<meta property='og:k{i}' content='v'>")).collect();
        assert_eq!(parse(&many).len(), MAX_KEYS);
        assert!(parse("\u{0}<<<>>><meta content").is_empty());
        assert!(parse("").is_empty());
    }
}
