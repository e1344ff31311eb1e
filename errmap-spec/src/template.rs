//! Message templates: `"Amount {amount} exceeds the limit of {limit}."`.
//!
//! A placeholder is `{name}`, where the name is also the `ErrorInfo.metadata`
//! key that carries the value (AIP-193): lowerCamel, `[a-z][a-zA-Z0-9]+`, at
//! most 64 characters, and not `code`, which holds the number. `{{` and `}}`
//! are literal braces. [`Pieces`] walks a template without allocating;
//! the build checks and the runtime fill both read templates through it.
//!
//! ```
//! use errmap_spec::template::{placeholders, Piece, Pieces};
//!
//! let text = "Amount {amount} exceeds {{the}} limit of {limit}.";
//! assert_eq!(placeholders(text).unwrap(), ["amount", "limit"]);
//! let pieces: Vec<Piece<'_>> = Pieces::new(text).map(Result::unwrap).collect();
//! assert_eq!(pieces[0], Piece::Text("Amount "));
//! assert_eq!(pieces[1], Piece::Placeholder("amount"));
//! assert_eq!(pieces[2], Piece::Text(" exceeds "));
//! assert_eq!(pieces[3], Piece::Text("{"));
//! assert!(placeholders("Amount {amount").is_err());
//! ```

use std::fmt;

/// The longest placeholder name: the longest `ErrorInfo.metadata` key
/// AIP-193 allows.
pub const MAX_PLACEHOLDER_LEN: usize = 64;

/// The metadata key errmap fills with the code's number; no placeholder may
/// take it.
pub const RESERVED_PLACEHOLDER: &str = "code";

/// One piece of a template, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Literal text, with `{{` and `}}` already made single braces.
    Text(&'a str),
    /// A placeholder's name, without its braces.
    Placeholder(&'a str),
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateError {
    /// A `{` with no `}` after it.
    Unclosed {
        /// Byte offset of the `{`.
        at: usize,
    },
    /// A `}` that closes nothing (write `}}` for a literal one).
    Unopened {
        /// Byte offset of the `}`.
        at: usize,
    },
    /// A placeholder name that is not an AIP-193 metadata key.
    BadName {
        /// The name, as written between the braces.
        name: String,
    },
    /// `{code}`: the key of the number.
    Reserved,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unclosed { at } => write!(
                f,
                "the brace at byte {at} is never closed (write {{{{ for a literal brace)"
            ),
            Self::Unopened { at } => write!(
                f,
                "the brace at byte {at} closes nothing (write }}}} for a literal brace)"
            ),
            Self::BadName { name } => write!(
                f,
                "placeholder {{{name}}} is not a lowerCamel metadata key ([a-z][a-zA-Z0-9]+, at most {MAX_PLACEHOLDER_LEN} characters)"
            ),
            Self::Reserved => write!(
                f,
                "placeholder {{{RESERVED_PLACEHOLDER}}} is reserved: ErrorInfo.metadata[\"code\"] holds the number"
            ),
        }
    }
}

impl std::error::Error for TemplateError {}

/// Whether `name` may be a placeholder: `[a-z][a-zA-Z0-9]+`, at most 64
/// characters (AIP-193's metadata key, without `-` and `_`, which lowerCamel
/// does not use).
pub fn is_valid_placeholder(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b.len() <= MAX_PLACEHOLDER_LEN
        && b[0].is_ascii_lowercase()
        && b.iter().all(u8::is_ascii_alphanumeric)
}

/// The pieces of a template, in order; an iterator that never allocates.
/// After the first error it ends.
#[derive(Debug, Clone)]
pub struct Pieces<'a> {
    text: &'a str,
    at: usize,
    failed: bool,
}

impl<'a> Pieces<'a> {
    /// The pieces of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            at: 0,
            failed: false,
        }
    }

    fn fail(&mut self, error: TemplateError) -> Option<Result<Piece<'a>, TemplateError>> {
        self.failed = true;
        Some(Err(error))
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = Result<Piece<'a>, TemplateError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.at >= self.text.len() {
            return None;
        }
        let rest = &self.text.as_bytes()[self.at..];
        let start = self.at;
        match rest[0] {
            b'{' if rest.get(1) == Some(&b'{') => {
                self.at += 2;
                Some(Ok(Piece::Text(&self.text[start..start + 1])))
            }
            b'}' if rest.get(1) == Some(&b'}') => {
                self.at += 2;
                Some(Ok(Piece::Text(&self.text[start..start + 1])))
            }
            b'}' => self.fail(TemplateError::Unopened { at: start }),
            b'{' => {
                let Some(len) = rest[1..].iter().position(|&b| b == b'}') else {
                    return self.fail(TemplateError::Unclosed { at: start });
                };
                let name = &self.text[start + 1..start + 1 + len];
                if name.contains('{') {
                    return self.fail(TemplateError::Unclosed { at: start });
                }
                if name == RESERVED_PLACEHOLDER {
                    return self.fail(TemplateError::Reserved);
                }
                if !is_valid_placeholder(name) {
                    return self.fail(TemplateError::BadName {
                        name: name.to_owned(),
                    });
                }
                self.at = start + len + 2;
                Some(Ok(Piece::Placeholder(name)))
            }
            _ => {
                let len = rest
                    .iter()
                    .position(|&b| b == b'{' || b == b'}')
                    .unwrap_or(rest.len());
                self.at += len;
                Some(Ok(Piece::Text(&self.text[start..start + len])))
            }
        }
    }
}

/// The placeholders of `text`, each once, in the order they first appear;
/// or the first thing wrong with it.
pub fn placeholders(text: &str) -> Result<Vec<&str>, TemplateError> {
    let mut names: Vec<&str> = Vec::new();
    for piece in Pieces::new(text) {
        if let Piece::Placeholder(name) = piece? {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<Piece<'_>> {
        Pieces::new(text).map(Result::unwrap).collect()
    }

    #[test]
    fn text_placeholders_and_escapes() {
        assert_eq!(pieces(""), []);
        assert_eq!(pieces("plain."), [Piece::Text("plain.")]);
        assert_eq!(
            pieces("{{x}} {ab}{cd}"),
            [
                Piece::Text("{"),
                Piece::Text("x"),
                Piece::Text("}"),
                Piece::Text(" "),
                Piece::Placeholder("ab"),
                Piece::Placeholder("cd"),
            ]
        );
        assert_eq!(
            placeholders("{ab} and {ab} and {cd}").unwrap(),
            ["ab", "cd"]
        );
        assert_eq!(placeholders("Лимит {limit}.").unwrap(), ["limit"]);
    }

    #[test]
    fn every_bad_template_is_named() {
        assert_eq!(
            placeholders("a {amount"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            placeholders("a {am{b}"),
            Err(TemplateError::Unclosed { at: 2 })
        );
        assert_eq!(
            placeholders("a } b"),
            Err(TemplateError::Unopened { at: 2 })
        );
        assert_eq!(placeholders("{code}"), Err(TemplateError::Reserved));
        for bad in [
            "{}",
            "{a}",
            "{Amount}",
            "{max_len}",
            "{1a}",
            "{ a }",
            "{ключ}",
        ] {
            assert!(
                matches!(placeholders(bad), Err(TemplateError::BadName { .. })),
                "{bad}"
            );
        }
        let long = format!("{{{}}}", "a".repeat(65));
        assert!(placeholders(&long).is_err());
        let longest = format!("{{{}}}", "a".repeat(64));
        assert_eq!(placeholders(&longest).unwrap().len(), 1);
        // The error text says how to write a literal brace.
        assert!(TemplateError::Unopened { at: 0 }.to_string().contains("}}"));
    }
}
