//! Every configuration declared in this process, by type, and [`declare`], which adds one and
//! hands back its setup steps.

use super::cell::Cell;
use super::error::ConfigError;
use super::follower;
use super::loader;
use super::publisher::Publisher;
use super::source::{ConfigSource, SourceKind};
use crate::topic::Topic;
use futures::future::BoxFuture;
use once_cell::sync::{Lazy, OnceCell};
use serde::{de::DeserializeOwned, Serialize};
use serde_bytes::ByteBuf;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The reserved messenger topics of one configuration type.
#[derive(Debug)]
pub(super) struct Topics {
    /// Published by the Library: the canonical JSON of each value.
    pub(super) value: Topic<ByteBuf>,
    /// To the Library: a worker's [`SharedConfig::set`](super::SharedConfig::set), as JSON.
    pub(super) set: Topic<ByteBuf>,
}

impl Topics {
    fn new(type_name: &str) -> Topics {
        let leak = |kind: &str| -> &'static str {
            Box::leak(format!("dispatch:config{kind}:{type_name}").into_boxed_str())
        };
        Topics {
            value: Topic::new(leak("")),
            set: Topic::new(leak("-set")),
        }
    }
}

/// One declared configuration type in this process.
pub(super) struct Entry<T> {
    pub(super) type_name: &'static str,
    pub(super) topics: Topics,
    pub(super) origin: String,
    pub(super) writable: bool,
    pub(super) cell: Cell<T>,
    /// Set in the Library only, by its setup.
    pub(super) publisher: OnceCell<Arc<Publisher<T>>>,
}

/// Every configuration declared in this process, by type. A type declared again replaces the
/// earlier declaration (whose setup steps then do nothing).
static REGISTRY: Lazy<Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

pub(super) fn declared<T: Send + Sync + 'static>() -> Option<Arc<Entry<T>>> {
    let registry = REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let any = Arc::clone(registry.get(&TypeId::of::<T>())?);
    any.downcast::<Entry<T>>().ok()
}

fn is_current<T: Send + Sync + 'static>(entry: &Arc<Entry<T>>) -> bool {
    declared::<T>().is_some_and(|e| Arc::ptr_eq(&e, entry))
}

/// A setup step of a declared configuration: run in the Library's or in each worker's setup.
pub(crate) type Step = Box<dyn Fn() -> BoxFuture<'static, Result<(), ConfigError>> + Send + Sync>;

/// The two setup steps of a declared configuration, which
/// [`Cluster::shared_config`](crate::Cluster::shared_config) registers.
pub(crate) struct Declared {
    /// The Library's: loads the configuration, publishes it, and keeps it current.
    pub(crate) library: Step,
    /// Each worker's: waits for the first value, then follows every later version.
    pub(crate) worker: Step,
}

/// Declares a configuration of type `T` in this process, for
/// [`Cluster::shared_config`](crate::Cluster::shared_config): registers it by type (replacing an
/// earlier declaration of `T`, whose steps then do nothing) and returns its two setup steps.
pub(crate) fn declare<T>(source: ConfigSource<T>) -> Declared
where
    T: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let type_name = std::any::type_name::<T>();
    let entry = Arc::new(Entry {
        type_name,
        topics: Topics::new(type_name),
        origin: source.origin(),
        writable: matches!(source.kind, SourceKind::Memory(_)),
        cell: Cell::new(),
        publisher: OnceCell::new(),
    });
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(
            TypeId::of::<T>(),
            Arc::clone(&entry) as Arc<dyn Any + Send + Sync>,
        );
    let wait = source.first_value_timeout;
    let source = Arc::new(source);
    let in_library = Arc::clone(&entry);
    Declared {
        library: Box::new(move || {
            let (entry, source) = (Arc::clone(&in_library), Arc::clone(&source));
            Box::pin(async move {
                if !is_current(&entry) {
                    return Ok(());
                }
                loader::start(entry, source).await
            })
        }),
        worker: Box::new(move || {
            let entry = Arc::clone(&entry);
            Box::pin(async move {
                if !is_current(&entry) {
                    return Ok(());
                }
                follower::start(entry, wait).await
            })
        }),
    }
}
