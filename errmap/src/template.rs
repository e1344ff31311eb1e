//! Filling a code's message template (`"Amount {amount} exceeds the limit
//! of {limit}."`) from a status's arguments. The template's syntax and its
//! checks are errmap-spec's ([`errmap_spec::template`]); a catalog that is
//! loaded has passed them.
//!
//! A template is read once, when its code's statuses are pre-encoded, into
//! [`Segment`]s: byte ranges of literal text and of placeholder names. A
//! fill then walks the segments; it never parses the text again.

use std::{borrow::Cow, ops::Range};

use errmap_spec::template::{Piece, Pieces};

/// One run of a read template: literal text, or a placeholder's name, as a
/// byte range of the template's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Literal text (an escaped brace is a one-byte run of it).
    Text(Range<u32>),
    /// A placeholder, by the range of its name.
    Param(Range<u32>),
}

/// The segments of `template`, or `None` when it is not a valid template
/// (a loaded catalog's are; a text that is not is sent as it is).
pub(crate) fn segments(template: &str) -> Option<Box<[Segment]>> {
    let base = template.as_ptr() as usize;
    let range = |piece: &str| {
        let start = piece.as_ptr() as usize - base;
        start as u32..(start + piece.len()) as u32
    };
    Pieces::new(template)
        .map(|piece| match piece {
            Ok(Piece::Text(text)) => Some(Segment::Text(range(text))),
            Ok(Piece::Placeholder(name)) => Some(Segment::Param(range(name))),
            Err(_) => None,
        })
        .collect()
}

/// The value of argument `name` among a builder's `ErrorInfo` metadata.
fn value<'a>(args: &'a [(Cow<'static, str>, String)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn slice<'a>(template: &'a str, range: &Range<u32>) -> &'a str {
    template
        .get(range.start as usize..range.end as usize)
        .unwrap_or_default()
}

/// A template as its code's pre-encoded statuses keep it: its text and its
/// segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Template<'a> {
    /// The text.
    pub(crate) text: &'a str,
    /// Its segments (see [`segments`]).
    pub(crate) segments: &'a [Segment],
}

impl Template<'_> {
    /// How long the text is once every placeholder is filled from `args`;
    /// or the first placeholder without an argument.
    pub(crate) fn filled_len(&self, args: &[(Cow<'static, str>, String)]) -> Result<usize, String> {
        let mut len = 0;
        for segment in self.segments {
            len += match segment {
                Segment::Text(range) => range.len(),
                Segment::Param(range) => {
                    let name = slice(self.text, range);
                    value(args, name).ok_or_else(|| name.to_owned())?.len()
                }
            };
        }
        Ok(len)
    }

    /// Hands `put` the runs of the text filled from `args`, in order (as
    /// many bytes as [`filled_len`](Self::filled_len) said, when it said
    /// any). Values are put in as they are, never read as a template.
    pub(crate) fn write_filled(
        &self,
        args: &[(Cow<'static, str>, String)],
        mut put: impl FnMut(&str),
    ) {
        for segment in self.segments {
            match segment {
                Segment::Text(range) => put(slice(self.text, range)),
                Segment::Param(range) => {
                    put(value(args, slice(self.text, range)).unwrap_or_default())
                }
            }
        }
    }

    /// The text filled from `args`: one allocation, of the exact size; or
    /// the first placeholder without an argument.
    pub(crate) fn fill(&self, args: &[(Cow<'static, str>, String)]) -> Result<String, String> {
        let mut out = String::with_capacity(self.filled_len(args)?);
        self.write_filled(args, |piece| out.push_str(piece));
        Ok(out)
    }

    /// The text unfilled, as a status without arguments sends it: each
    /// placeholder written as `<name>`, literal braces as single ones. So
    /// no raw template syntax reaches the wire.
    pub(crate) fn unfilled(&self) -> String {
        let mut out = String::with_capacity(self.text.len());
        for segment in self.segments {
            match segment {
                Segment::Text(range) => out.push_str(slice(self.text, range)),
                Segment::Param(range) => {
                    out.push('<');
                    out.push_str(slice(self.text, range));
                    out.push('>');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_exactly_and_reads_values_as_text() {
        let text = "{amount} > {limit} {{sic}}.";
        let read = segments(text).unwrap();
        let template = Template {
            text,
            segments: &read,
        };
        let args = vec![
            (Cow::Borrowed("amount"), "{limit}}".to_owned()),
            (Cow::Borrowed("limit"), "100".to_owned()),
        ];
        let filled = template.fill(&args).unwrap();
        assert_eq!(filled, "{limit}} > 100 {sic}.");
        assert_eq!(
            filled.capacity(),
            filled.len(),
            "one allocation of the exact size"
        );
        assert_eq!(template.fill(&args[1..]), Err("amount".to_owned()));
        assert_eq!(template.unfilled(), "<amount> > <limit> {sic}.");
        assert_eq!(segments("a {b"), None);
    }
}
