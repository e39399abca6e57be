//! Errors that end a node daemon.

use std::path::PathBuf;

use thiserror::Error;

use crate::executor::ExecutorError;

#[derive(Debug, Error)]
pub enum NodedError {
    #[error("no scheduler address given: use --server ADDR[,ADDR...] or GANTRY_SERVER")]
    NoServers,
    #[error(transparent)]
    Address(#[from] gantry_model::address::AddressError),
    #[error("the node needs a name")]
    NoName,
    #[error("no default data dir: HOME is not set; give --data-dir DIR")]
    NoDefaultDataDir,
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("data dir {path} is in use by another gantry-noded (lock file {lock})")]
    DataDirLocked { path: PathBuf, lock: PathBuf },
    #[error("cannot recover the jobs recorded in the data dir: {0}")]
    Recover(#[source] ExecutorError),
}
