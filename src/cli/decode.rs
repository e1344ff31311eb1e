//! `errmap decode`: a `grpc-status-details-bin` value, made readable.

use serde_json::{json, Value};

use errmap::{grpc_code_name, Catalog as _, ErrorCode, ErrorDetails};

use super::{
    exit::{Failure, Outcome},
    lookup::{entry_json, print_value, retry_text},
    safe,
};

pub(crate) fn decode(value: &str, json: bool) -> Outcome {
    let mut text = value.trim();
    if let Some(rest) = text.strip_prefix("grpc-status-details-bin:") {
        text = rest.trim();
    }
    let details = match ErrorDetails::from_header_value(text.as_bytes()) {
        Ok(details) => details,
        Err(e) => {
            return Err(Failure::BadInput(format!("cannot decode: {e}")));
        }
    };
    let code = details.status_code();
    let mut out = json!({
        "status": {
            "code": code as i32,
            "codeName": grpc_code_name(code),
            "message": details.status_message(),
        },
    });
    if let Some(info) = details.error_info() {
        let metadata: serde_json::Map<String, Value> = info
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        out["errorInfo"] = json!({
            "reason": info.reason,
            "domain": info.domain,
            "metadata": metadata,
        });
    }
    if let Some(m) = details.localized_message() {
        out["localizedMessage"] = json!({"locale": m.locale, "message": m.message});
    }
    if let Some(delay) = details.retry_delay() {
        out["retryInfo"] = json!({"retryDelay": retry_text(delay)});
    }
    if let Some(bad) = details.bad_request() {
        out["badRequest"] = json!({
            "fieldViolations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
                "reason": v.reason,
                "localizedMessage": v.localized_message.as_ref().map(|m| json!({"locale": m.locale, "message": m.message})),
            })).collect::<Vec<_>>(),
        });
    }
    if let Some(help) = details.help() {
        out["help"] = json!({
            "links": help.links.iter().map(|l| json!({"description": l.description, "url": l.url})).collect::<Vec<_>>(),
        });
    }
    if !details.other().is_empty() {
        out["otherDetails"] = json!(details
            .other()
            .iter()
            .map(|any| json!({"typeUrl": any.type_url, "bytes": any.value.len()}))
            .collect::<Vec<_>>());
    }
    let table = ErrorCode::table();
    if let Some(entry) = details.entry::<ErrorCode>() {
        out["catalogEntry"] = entry_json(table, entry);
    }

    if json {
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(());
    }
    // Everything below came from a peer: control characters are escaped.
    println!(
        "status: {} ({}) \"{}\"",
        grpc_code_name(code),
        code as i32,
        safe(details.status_message())
    );
    if let Some(info) = details.error_info() {
        println!(
            "ErrorInfo: reason={} domain={}",
            safe(&info.reason),
            safe(&info.domain)
        );
        let mut metadata: Vec<_> = info.metadata.iter().collect();
        metadata.sort();
        for (k, v) in metadata {
            println!("  {} = {}", safe(k), safe(v));
        }
    }
    if let Some(m) = details.localized_message() {
        println!(
            "LocalizedMessage [{}]: {}",
            safe(&m.locale),
            safe(&m.message)
        );
    }
    if let Some(delay) = details.retry_delay() {
        println!("RetryInfo: retry after {}", retry_text(delay));
    }
    if let Some(bad) = details.bad_request() {
        println!("BadRequest:");
        for v in &bad.field_violations {
            let reason = if v.reason.is_empty() {
                String::new()
            } else {
                format!(" [{}]", v.reason)
            };
            println!(
                "  - {}: {}{}",
                safe(&v.field),
                safe(&v.description),
                safe(&reason)
            );
        }
    }
    if let Some(help) = details.help() {
        println!("Help:");
        for l in &help.links {
            println!("  - {}: {}", safe(&l.description), safe(&l.url));
        }
    }
    for any in details.other() {
        println!(
            "other detail: {} ({} bytes)",
            safe(&any.type_url),
            any.value.len()
        );
    }
    match details.entry::<ErrorCode>() {
        Some(entry) => {
            println!("catalog entry:");
            print_value(&entry_json(table, entry), false);
        }
        None => println!("not a catalog error of this catalog"),
    }
    Ok(())
}
