//! Wires the daemon together and serves until shut down.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gantry_proto as pb;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;

use crate::api::{Explanations, SchedulerApi};
use crate::config::SchedConfig;
use crate::engine::{Engine, EngineError};
use crate::liveness::{Liveness, expire_silent_nodes};
use crate::log_store::{SledLog, StoreError};
use crate::scheduling;
use crate::session::NodeSessions;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot open the data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("cannot open the log in {dir}: {source}")]
    Store { dir: String, source: StoreError },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the log writer stopped: {0}")]
    WriterStopped(String),
}

/// Largest message accepted or sent (scripts and environments travel with jobs).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// Serves the client API and node sessions on `listener` until `shutdown` resolves.
pub async fn serve(
    config: SchedConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let dir = config.data_dir.display().to_string();
    std::fs::create_dir_all(&config.data_dir).map_err(|source| ServeError::DataDir {
        dir: dir.clone(),
        source,
    })?;
    let store =
        SledLog::open(&config.data_dir.join("log")).map_err(|source| ServeError::Store {
            dir: dir.clone(),
            source,
        })?;
    let engine = Engine::open(Box::new(store), config.snapshot_every)?;
    let config = Arc::new(config);
    let explanations = Explanations::default();
    let liveness = Arc::new(Liveness::default());

    let tasks = [
        tokio::spawn(scheduling::run(engine.clone(), explanations.clone())),
        tokio::spawn(expire_silent_nodes(
            engine.clone(),
            liveness.clone(),
            Duration::from_millis(config.heartbeat_timeout_ms),
        )),
    ];
    let api = SchedulerApi {
        engine: engine.clone(),
        config: config.clone(),
        explanations,
    };
    let sessions = NodeSessions {
        engine: engine.clone(),
        config: config.clone(),
        liveness,
    };
    let address = listener
        .local_addr()
        .map_err(|source| ServeError::DataDir { dir, source })?;
    info!(%address, data_dir = %config.data_dir.display(), "gantry-schedd serving");

    // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm and delayed
    // ACKs add up to 40 ms to a call.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(
            pb::scheduler_server::SchedulerServer::new(api)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            pb::node_session_server::NodeSessionServer::new(sessions)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(incoming, shutdown);
    let result = tokio::select! {
        served = server => served.map_err(ServeError::from),
        reason = engine.failed() => Err(ServeError::WriterStopped(reason)),
    };
    for task in tasks {
        task.abort();
    }
    result
}
