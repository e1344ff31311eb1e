//! The route table: which methods exist, their kind (a single request or
//! a stream), their input type for the decode check, and the exempt and
//! long-lived paths.

use super::*;

/// What the admission layer knows of a method.
#[derive(Debug, Clone)]
pub(super) struct MethodInfo {
    pub(super) client_streaming: bool,
    pub(super) input: MessageDescriptor,
}

/// Where a path leads.
#[derive(Debug, Clone, Copy)]
pub(super) enum Route<'a> {
    /// A method known from descriptors.
    Method(&'a MethodInfo),
    /// A method of a served service whose descriptors are not known.
    Opaque,
    /// Nothing the server serves.
    NotServed,
}

/// Why a descriptor set could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid file descriptor set: {0}")]
pub struct RouteError(#[from] prost_reflect::DescriptorError);

/// The methods a server serves, for deciding 43 from the routes and for
/// knowing each method's kind and input type.
///
/// ```
/// use errmap_server::admission::RouteTable;
///
/// let mut routes = RouteTable::new();
/// routes.add_descriptors(errmap::pb::FILE_DESCRIPTOR_SET).unwrap();
/// routes.add_service("errmap.v1.ErrorCatalog");
/// assert!(routes.serves("/errmap.v1.ErrorCatalog/GetError"));
/// assert!(!routes.serves("/errmap.v1.ErrorCatalog/NoSuchMethod"));
/// assert!(!routes.serves("/no.Such/Service"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    pub(super) pool: DescriptorPool,
    // Looked up on every call: foldhash, not SipHash. The keys are the
    // served paths, fixed before the server starts.
    pub(super) methods: HashMap<String, MethodInfo, foldhash::fast::RandomState>,
    pub(super) opaque: HashSet<String, foldhash::fast::RandomState>,
}

impl RouteTable {
    /// An empty table: every path is "not served".
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the services of an encoded `FileDescriptorSet` known, so that
    /// their methods' kinds and input types are. Add the service itself
    /// with [`add_service`](Self::add_service).
    pub fn add_descriptors(&mut self, encoded_set: &[u8]) -> Result<(), RouteError> {
        self.pool.decode_file_descriptor_set(encoded_set)?;
        let opaque: Vec<String> = self.opaque.iter().cloned().collect();
        for name in opaque {
            self.add_service(&name);
        }
        Ok(())
    }

    /// The paths of the methods known from descriptors
    /// (`/pkg.Service/Method`).
    pub fn method_paths(&self) -> impl Iterator<Item = &str> + '_ {
        self.methods.keys().map(String::as_str)
    }

    /// Marks the service `name` (e.g. `errmap.v1.ErrorCatalog`) as served.
    /// With its descriptors known, only its methods are; without, every
    /// path under it is.
    pub fn add_service(&mut self, name: &str) {
        match self.pool.get_service_by_name(name) {
            Some(service) => {
                self.opaque.remove(name);
                for method in service.methods() {
                    self.methods.insert(
                        format!("/{name}/{}", method.name()),
                        MethodInfo {
                            client_streaming: method.is_client_streaming(),
                            input: method.input(),
                        },
                    );
                }
            }
            None => {
                self.opaque.insert(name.to_owned());
            }
        }
    }

    /// Whether `path` names a method the server serves.
    pub fn serves(&self, path: &str) -> bool {
        !matches!(self.route(path), Route::NotServed)
    }

    pub(super) fn route(&self, path: &str) -> Route<'_> {
        if let Some(method) = self.methods.get(path) {
            return Route::Method(method);
        }
        let service = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        match service {
            Some(service) if self.opaque.contains(service) => Route::Opaque,
            _ => Route::NotServed,
        }
    }
}
