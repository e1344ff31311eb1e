//! Server reflection that follows the catalogs: the descriptors of every
//! catalog loaded at run time are served beside errmap's own, and a reload
//! that brings new ones is seen by the next reflection call.
//!
//! tonic-reflection builds its state once; [`LiveReflection`] keeps the
//! service built for the current catalog set and builds a new one when the
//! set changes. A reflection stream in flight keeps the service it started
//! with.
//!
//! tonic-reflection's builder ties the service's type to the lifetime of
//! the bytes it is given, so a service that outlives the call that built it
//! needs `'static` bytes. Each distinct descriptor file is therefore kept
//! once for the life of the process ([`interned_files`]): a reload that
//! changes one catalog file keeps that file's few kilobytes, while the
//! catalog tables themselves, and everything else of the old set, are
//! freed.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use errmap::Catalogs;
use tonic::server::NamedService;
use tower::Service;

use crate::reload::LiveCatalogs;

/// A `FileDescriptorSet` read as its encoded files, without decoding them.
#[derive(Clone, PartialEq, prost::Message)]
struct EncodedFiles {
    #[prost(bytes = "vec", repeated, tag = "1")]
    file: Vec<Vec<u8>>,
}

/// Every file of the encoded descriptor set `set`, each as a one-file
/// encoded set, kept once per distinct content for the life of the process
/// (see the module docs).
pub(crate) fn interned_files(set: &[u8]) -> Vec<&'static [u8]> {
    use prost::Message as _;
    static KEPT: Mutex<Vec<&'static [u8]>> = Mutex::new(Vec::new());
    let Ok(files) = EncodedFiles::decode(set) else {
        return Vec::new();
    };
    let mut kept = KEPT.lock().unwrap_or_else(PoisonError::into_inner);
    files
        .file
        .into_iter()
        .map(|file| {
            let one = EncodedFiles { file: vec![file] }.encode_to_vec();
            match kept.iter().find(|k| ***k == *one) {
                Some(found) => *found,
                None => {
                    let leaked: &'static [u8] = Box::leak(one.into_boxed_slice());
                    kept.push(leaked);
                    leaked
                }
            }
        })
        .collect()
}

/// The descriptor files of the catalogs loaded at run time in `catalogs`
/// (see [`interned_files`]), each once.
pub(crate) fn runtime_descriptor_sets(catalogs: &Catalogs) -> Vec<&'static [u8]> {
    let mut seen: Vec<*const u8> = Vec::new();
    let mut files: Vec<&'static [u8]> = Vec::new();
    for table in catalogs.tables() {
        if let Some(set) = table.descriptor_set() {
            if seen.contains(&set.as_ptr()) {
                continue;
            }
            seen.push(set.as_ptr());
            for file in interned_files(set) {
                if !files.iter().any(|f| std::ptr::eq(*f, file)) {
                    files.push(file);
                }
            }
        }
    }
    files
}

/// A reflection service (`S`, v1 or v1alpha) rebuilt by `build` whenever
/// the catalog set changes.
pub(crate) struct LiveReflection<S, F> {
    catalogs: LiveCatalogs,
    build: Arc<F>,
    built: Arc<Mutex<(Arc<Catalogs>, S)>>,
}

impl<S: Clone, F> Clone for LiveReflection<S, F> {
    fn clone(&self) -> Self {
        Self {
            catalogs: self.catalogs.clone(),
            build: self.build.clone(),
            built: self.built.clone(),
        }
    }
}

impl<S, F> LiveReflection<S, F>
where
    S: Clone,
    F: Fn(&Catalogs) -> Result<S, tonic_reflection::server::Error>,
{
    /// The service for the current set of `catalogs`, or why it cannot be
    /// built.
    pub(crate) fn new(
        catalogs: LiveCatalogs,
        build: F,
    ) -> Result<Self, tonic_reflection::server::Error> {
        let current = catalogs.load();
        let service = build(&current)?;
        Ok(Self {
            catalogs,
            build: Arc::new(build),
            built: Arc::new(Mutex::new((current, service))),
        })
    }

    /// The service for the set current now: the one built, or a new one
    /// when the set changed. Should a new set's descriptors not build (the
    /// catalogs were checked, so this is not expected), the last service
    /// stays.
    fn current(&self) -> S {
        let now = self.catalogs.load();
        {
            let built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
            if Arc::ptr_eq(&built.0, &now) {
                return built.1.clone();
            }
        }
        // Built outside the lock: other calls keep being served meanwhile.
        let service = match (self.build)(&now) {
            Ok(service) => service,
            Err(error) => {
                tracing::warn!(%error, "reflection keeps the descriptors of the previous catalogs");
                let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
                built.0 = now;
                return built.1.clone();
            }
        };
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        *built = (now, service.clone());
        service
    }
}

impl<S, F, R> Service<R> for LiveReflection<S, F>
where
    S: Service<R, Error = Infallible> + Clone,
    F: Fn(&Catalogs) -> Result<S, tonic_reflection::server::Error>,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // tonic's generated servers are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.current().call(request)
    }
}

impl<S: NamedService, F> NamedService for LiveReflection<S, F> {
    const NAME: &'static str = S::NAME;
}
