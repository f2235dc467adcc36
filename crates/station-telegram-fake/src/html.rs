//! Telegram's HTML parse mode, as far as the Bot API checks it: the allowed
//! tags, balanced nesting and character entities. Returns the text a client
//! would show (the length limits apply to it, counted in UTF-16 code units).

const ALLOWED: &[&str] = &[
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "code",
    "pre",
    "a",
    "span",
    "tg-spoiler",
    "tg-emoji",
    "blockquote",
];

/// Parses `text` in HTML mode into the shown text, or the Bot API's error
/// description (`Bad Request: can't parse entities: …`).
pub fn parse(text: &str) -> Result<String, String> {
    let err = |m: String| Err(format!("Bad Request: can't parse entities: {m}"));
    let mut out = String::with_capacity(text.len());
    let mut open: Vec<String> = vec![];
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let c = bytes[i];
        if c == b'<' {
            let Some(end) = text[i..].find('>') else {
                return err(format!("Unclosed start tag at byte offset {i}"));
            };
            let inner = &text[i + 1..i + end];
            if let Some(name) = inner.strip_prefix('/') {
                let name = name.trim().to_ascii_lowercase();
                match open.pop() {
                    Some(top) if top == name => {}
                    Some(top) => {
                        return err(format!(
                            "Can't find end tag corresponding to start tag \"{top}\" at byte offset {i}"
                        ));
                    }
                    None => return err(format!("Unexpected end tag at byte offset {i}")),
                }
            } else {
                let name: String = inner
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != '/')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if !ALLOWED.contains(&name.as_str()) {
                    return err(format!("Unsupported start tag \"{name}\" at byte offset {i}"));
                }
                if name == "a" && !inner.contains("href=") {
                    return err(format!("Tag \"a\" must have the attribute \"href\" at byte offset {i}"));
                }
                open.push(name);
            }
            i += end + 1;
        } else if c == b'&' {
            let rest = &text[i..];
            let Some(semi) = rest.find(';').filter(|&s| s <= 10) else {
                // A bare ampersand is shown as is.
                out.push('&');
                i += 1;
                continue;
            };
            let ent = &rest[1..semi];
            let ch = match ent {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
                e if e.starts_with('#') => e[1..].parse::<u32>().ok().and_then(char::from_u32),
                _ => None,
            };
            match ch {
                Some(ch) => {
                    out.push(ch);
                    i += semi + 1;
                }
                None => {
                    out.push('&');
                    i += 1;
                }
            }
        } else {
            let ch = text[i..].chars().next().expect("in bounds");
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    if let Some(top) = open.pop() {
        return err(format!("Can't find end tag corresponding to start tag \"{top}\""));
    }
    Ok(out)
}

/// Length as Telegram counts it (UTF-16 code units).
pub fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_allowed_tags_and_entities() {
        assert_eq!(parse("<b>a</b> &lt;x&gt; &amp; <a href=\"u\">l</a>").unwrap(), "a <x> & l");
        assert!(parse("<b>a").unwrap_err().contains("Can't find end tag"));
        assert!(parse("<div>a</div>").unwrap_err().contains("Unsupported start tag \"div\""));
        assert!(parse("<b><i>x</b></i>").is_err());
        assert_eq!(utf16_len("a😀"), 3);
    }
}
