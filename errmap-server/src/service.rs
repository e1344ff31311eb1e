//! The lookup service, `errmap.v1.ErrorCatalog`: any gRPC client can ask
//! what a code means.
//!
//! Its own failures are catalog errors: a request without a key, with an
//! empty name, or with an unknown category is 40 `API_INVALID_REQUEST` with
//! a `BadRequest` naming the field; a key that names no code is 47
//! `API_ITEM_NOT_FOUND` with the key asked for in the `ErrorInfo` metadata,
//! and so is a domain the server has no catalog for. Requests without a
//! domain are answered from the default catalog; `ListCatalogs` lists every
//! catalog with its locales and a content hash to cache on.
//!
//! `GetError` and `ListErrors` answer in the locale of the caller's
//! `accept-language` metadata (`ErrorDescriptor.localized_message` and
//! `.locale`), and so does the `LocalizedMessage` of their errors.
//!
//! ```
//! use errmap::pb::{get_error_request::Key, GetErrorRequest};
//! use errmap::pb::error_catalog_server::ErrorCatalog as _;
//! use errmap_server::service::CatalogService;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let service = CatalogService::new();
//! let request = tonic::Request::new(GetErrorRequest { key: Some(Key::Code(21)), domain: None });
//! let response = service.get_error(request).await.unwrap().into_inner();
//! assert_eq!(response.error.unwrap().name, "AUTH_REQUIRED");
//! # }
//! ```

use tonic::{metadata::MetadataMap, Request, Response, Status};

use crate::reload::LiveCatalogs;

use errmap::{
    catalog::{CatalogEntry, CatalogTable, TableRef},
    catalog_set::Catalogs,
    pb::{
        error_catalog_server::{ErrorCatalog, ErrorCatalogServer},
        get_error_request::Key,
        CatalogInfo, ErrorDescriptor, GetErrorRequest, GetErrorResponse, ListCatalogsRequest,
        ListCatalogsResponse, ListErrorsRequest, ListErrorsResponse,
    },
    Catalog, ErrorCode,
};

pub use errmap::catalog::grpc_code_name;

/// The wire form of an entry of `table`, with its messages in `en-US`.
pub fn descriptor(table: &CatalogTable, entry: &CatalogEntry) -> ErrorDescriptor {
    descriptor_in(table, entry, errmap::locale::DEFAULT_LOCALE)
}

/// The wire form of an entry of `table`, with `localized_message` in
/// `locale` (one of [`CatalogTable::locales`]; the English message for
/// another).
pub fn descriptor_in(table: &CatalogTable, entry: &CatalogEntry, locale: &str) -> ErrorDescriptor {
    let (locale, localized) = match entry.message_in(locale) {
        Some(text) => (locale, text),
        None => (errmap::locale::DEFAULT_LOCALE, entry.message()),
    };
    ErrorDescriptor {
        localized_message: localized.to_owned(),
        locale: locale.to_owned(),
        code: Some(entry.number()),
        number: Some(entry.number()),
        name: entry.name().to_owned(),
        message: entry.message().to_owned(),
        category: entry.category().to_owned(),
        grpc_code: entry.grpc_code() as i32,
        grpc_code_name: grpc_code_name(entry.grpc_code()).to_owned(),
        http_status: i32::from(entry.http_status()),
        domain: table.domain().to_owned(),
        retry_delay: entry.retry_delay().map(|d| prost_types::Duration {
            seconds: d.as_secs() as i64,
            nanos: d.subsec_nanos() as i32,
        }),
        params: entry.params().map(str::to_owned).collect(),
    }
}

/// The `errmap.v1.ErrorCatalog` implementation, on a set of catalogs (by
/// default the embedded one).
#[derive(Debug, Clone, Default)]
pub struct CatalogService {
    catalogs: LiveCatalogs,
}

impl CatalogService {
    /// The service on the embedded catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// The service on `catalogs`; requests without a domain use its
    /// default.
    pub fn with_catalogs(catalogs: Catalogs) -> Self {
        Self::with_live_catalogs(LiveCatalogs::new(catalogs))
    }

    /// The service on the catalogs current at each call, which a reload
    /// replaces (new codes answer at once; a call in flight keeps the set
    /// it started with).
    pub fn with_live_catalogs(catalogs: LiveCatalogs) -> Self {
        Self { catalogs }
    }

    /// The service wrapped in its generated tonic server, ready for a router.
    pub fn into_server(self) -> ErrorCatalogServer<Self> {
        ErrorCatalogServer::new(self)
    }

    /// The catalog a request names, or the default; a miss is 47 with the
    /// domain asked for.
    fn catalog(&self, domain: Option<&str>, metadata: &MetadataMap) -> Result<TableRef, Status> {
        let catalogs = self.catalogs.load();
        let found = match domain {
            Some(domain) => catalogs.by_domain(domain),
            None => catalogs.default_table(),
        };
        found.cloned().ok_or_else(|| {
            let asked = clip(domain.unwrap_or("(the default)").to_owned());
            ErrorCode::ApiItemNotFound
                .builder()
                .locale(metadata)
                .message(format!("no catalog has domain {asked:?}"))
                .metadata("requestedDomain", asked)
                .build()
                .unwrap_or_else(Status::from)
        })
    }
}

impl CatalogService {
    /// A lookup by name without a domain: the one catalog that has the
    /// name answers, whichever it is; a name in several catalogs is 40,
    /// naming their domains.
    fn get_by_name_anywhere(
        &self,
        name: &str,
        metadata: &MetadataMap,
    ) -> Result<Response<GetErrorResponse>, Status> {
        let catalogs = self.catalogs.load();
        let mut holders = catalogs
            .tables()
            .filter_map(|t| t.by_name(name).map(|e| (t, e)));
        match (holders.next(), holders.next()) {
            (Some((table, entry)), None) => Ok(Response::new(GetErrorResponse {
                error: Some(descriptor_in(table, entry, table.negotiate(metadata))),
            })),
            (Some((first, _)), Some((second, _))) => {
                let mut domains = vec![first.domain(), second.domain()];
                domains.extend(holders.map(|(t, _)| t.domain()));
                let description = format!(
                    "{} is in several catalogs ({}); set the domain",
                    clip(name.to_owned()),
                    domains.join(", ")
                );
                Err(ErrorCode::ApiInvalidRequest
                    .builder()
                    .locale(metadata)
                    .field_violation("domain", description)
                    .metadata("domains", domains.join(","))
                    .build()
                    .unwrap_or_else(Status::from))
            }
            (None, _) => Err(not_found(
                ("requestedName", clip(name.to_owned())),
                metadata,
            )),
        }
    }
}

/// 47 for a key that names no code: `asked` is the metadata key and value
/// of what was asked.
fn not_found((key, value): (&'static str, String), metadata: &MetadataMap) -> Status {
    let message = format!("no catalog error has {key} {value:?}");
    ErrorCode::ApiItemNotFound
        .builder()
        .locale(metadata)
        .message(message)
        .metadata(key, value)
        .build()
        .unwrap_or_else(Status::from)
}

fn invalid_field(field: &'static str, description: &'static str, metadata: &MetadataMap) -> Status {
    ErrorCode::ApiInvalidRequest
        .builder()
        .locale(metadata)
        .field_violation(field, description)
        .build()
        .unwrap_or_else(Status::from)
}

/// Names echoed back in error metadata are cut to this many bytes, so that a
/// huge request cannot blow the trailer budget.
const MAX_ECHOED_NAME: usize = 100;

fn clip(mut name: String) -> String {
    if name.len() > MAX_ECHOED_NAME {
        let mut end = MAX_ECHOED_NAME;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
        name.push('…');
    }
    name
}

#[tonic::async_trait]
impl ErrorCatalog for CatalogService {
    async fn get_error(
        &self,
        request: Request<GetErrorRequest>,
    ) -> Result<Response<GetErrorResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        if let (Some(Key::Name(name)), None) = (&request.key, &request.domain) {
            if !name.is_empty() {
                return self.get_by_name_anywhere(name, &metadata);
            }
        }
        let table = self.catalog(request.domain.as_deref(), &metadata)?;
        let (found, asked) = match request.key {
            None => {
                return Err(invalid_field(
                    "key",
                    "set either `code` or `name` to the code to look up",
                    &metadata,
                ))
            }
            Some(Key::Name(name)) if name.is_empty() => {
                return Err(invalid_field(
                    "name",
                    "the name must not be empty",
                    &metadata,
                ))
            }
            Some(Key::Code(code)) => (table.by_number(code), ("requestedCode", code.to_string())),
            Some(Key::Name(name)) => (table.by_name(&name), ("requestedName", clip(name))),
        };
        match found {
            Some(entry) => Ok(Response::new(GetErrorResponse {
                error: Some(descriptor_in(&table, entry, table.negotiate(&metadata))),
            })),
            None => Err(not_found(asked, &metadata)),
        }
    }

    async fn list_errors(
        &self,
        request: Request<ListErrorsRequest>,
    ) -> Result<Response<ListErrorsResponse>, Status> {
        let (metadata, _, request) = request.into_parts();
        let table = self.catalog(request.domain.as_deref(), &metadata)?;
        let category = request.category;
        if !category.is_empty() && !table.is_category(&category) {
            return Err(invalid_field(
                "category",
                "not a catalog category; leave it empty to list every code",
                &metadata,
            ));
        }
        let locale = table.negotiate(&metadata);
        let errors = table
            .entries()
            .iter()
            .filter(|e| category.is_empty() || e.category() == category)
            .map(|e| descriptor_in(&table, e, locale))
            .collect();
        Ok(Response::new(ListErrorsResponse { errors }))
    }

    async fn list_catalogs(
        &self,
        _request: Request<ListCatalogsRequest>,
    ) -> Result<Response<ListCatalogsResponse>, Status> {
        let current = self.catalogs.load();
        let default = current.default_table().map(|t| t.domain());
        let catalogs = current
            .tables()
            .map(|t| CatalogInfo {
                domain: t.domain().to_owned(),
                enum_name: t.enum_name().to_owned(),
                code_count: t.entries().len() as i32,
                content_hash: format!("{:016x}", t.content_hash()),
                is_default: Some(t.domain()) == default,
                locales: t.locales().iter().map(|l| (*l).to_owned()).collect(),
            })
            .collect();
        Ok(Response::new(ListCatalogsResponse { catalogs }))
    }
}
