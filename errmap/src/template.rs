//! Filling a code's message template (`"Amount {amount} exceeds the limit
//! of {limit}."`) from a status's arguments. The template's syntax and its
//! checks are errmap-spec's ([`errmap_spec::template`]); a catalog that is
//! loaded has passed them.

use std::borrow::Cow;

use errmap_spec::template::{Piece, Pieces};

/// The value of argument `name` among a builder's `ErrorInfo` metadata.
fn value<'a>(args: &'a [(Cow<'static, str>, String)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

/// `template`, a code's message (in any locale), with every placeholder
/// filled from `args`: one allocation, of the exact size. A placeholder
/// without an argument is an error naming it; values are put in as they
/// are, never read as a template.
pub(crate) fn fill(template: &str, args: &[(Cow<'static, str>, String)]) -> Result<String, String> {
    let missing = |name: &str| name.to_owned();
    let mut len = 0;
    for piece in Pieces::new(template) {
        len += match piece {
            Ok(Piece::Text(text)) => text.len(),
            Ok(Piece::Placeholder(name)) => value(args, name).ok_or_else(|| missing(name))?.len(),
            // Loaded catalogs are checked; should one not be, its text is
            // sent as it is rather than lost.
            Err(_) => return Ok(template.to_owned()),
        };
    }
    let mut out = String::with_capacity(len);
    for piece in Pieces::new(template).flatten() {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Placeholder(name) => out.push_str(value(args, name).unwrap_or_default()),
        }
    }
    Ok(out)
}

/// `template` unfilled, as a status without arguments sends it: each
/// placeholder written as `<name>`, literal braces as single ones. So no
/// raw template syntax reaches the wire.
pub(crate) fn unfilled(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    for piece in Pieces::new(template) {
        match piece {
            Ok(Piece::Text(text)) => out.push_str(text),
            Ok(Piece::Placeholder(name)) => {
                out.push('<');
                out.push_str(name);
                out.push('>');
            }
            Err(_) => return template.to_owned(),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_exactly_and_reads_values_as_text() {
        let template = "{amount} > {limit} {{sic}}.";
        let args = vec![
            (Cow::Borrowed("amount"), "{limit}}".to_owned()),
            (Cow::Borrowed("limit"), "100".to_owned()),
        ];
        let filled = fill(template, &args).unwrap();
        assert_eq!(filled, "{limit}} > 100 {sic}.");
        assert_eq!(
            filled.capacity(),
            filled.len(),
            "one allocation of the exact size"
        );
        assert_eq!(fill(template, &args[1..]), Err("amount".to_owned()));
        assert_eq!(unfilled(template), "<amount> > <limit> {sic}.");
    }
}
