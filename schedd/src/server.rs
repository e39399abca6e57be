//! Wires the daemon together and serves until shut down.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use gantry_proto as pb;
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::info;

use crate::api::SchedulerApi;
use crate::config::ConfigError;
use crate::config::SchedConfig;
use crate::drains::requeue_at_deadlines;
use crate::engine::{Engine, EngineConfig, EngineError, Transport};
use crate::explain::Explanations;
use crate::liveness::{Liveness, expire_silent_nodes};
use crate::raft::{RaftLogError, SledRaftLog};
use crate::scheduling;
use crate::session::NodeSessions;
use crate::transport::{GrpcTransport, RaftService};

#[derive(Debug, Error)]
pub enum ServeError {
    // The cause is in the message, not a `source`: error chains would print it twice.
    #[error("cannot open the data directory {dir}: {error}")]
    DataDir { dir: String, error: std::io::Error },
    #[error("cannot open the log in {dir}: {error}")]
    Store { dir: String, error: RaftLogError },
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot use the listening socket: {0}")]
    Listener(std::io::Error),
    #[error("the log writer stopped: {0}")]
    WriterStopped(String),
}

/// Largest message accepted or sent (scripts and environments travel with jobs).
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A scheduler whose state is recovered and ready to serve.
pub struct Scheduler {
    config: SchedConfig,
    engine: Engine,
}

impl Scheduler {
    /// Opens (or creates, readable by its owner only: the log holds every job's
    /// environment) the data directory and recovers the state from the log.
    pub fn open(config: SchedConfig) -> Result<Scheduler, ServeError> {
        let dir = config.data_dir.display().to_string();
        let data_dir_error = |error| ServeError::DataDir {
            dir: dir.clone(),
            error,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .map_err(data_dir_error)?;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(data_dir_error)?;
        let store = SledRaftLog::open(&config.data_dir.join("raft"))
            .and_then(|store| {
                store.check_format(gantry_state::STATE_FORMAT)?;
                Ok(store)
            })
            .map_err(|error| ServeError::Store {
                dir: dir.clone(),
                error,
            })?;
        let peers = config.peer_urls()?;
        let engine_config = EngineConfig {
            id: config.id,
            initial_voters: config.initial_voters()?,
            snapshot_every: config.snapshot_every,
        };
        let id = config.id;
        // Even a group of one gets a transport: replicas may be added to it later.
        let engine = Engine::open(store, engine_config, |reports| -> Box<dyn Transport> {
            Box::new(GrpcTransport::start(id, &peers, reports))
        })?;
        Ok(Scheduler { config, engine })
    }

    /// Serves the client API and node sessions on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let Scheduler { config, engine } = self;
        let config = Arc::new(config);
        let explanations = Explanations::default();
        let liveness = Arc::new(Liveness::default());

        let tasks = [
            tokio::spawn(scheduling::run(
                engine.clone(),
                explanations.clone(),
                config.fabric.clone(),
            )),
            tokio::spawn(expire_silent_nodes(
                engine.clone(),
                liveness.clone(),
                Duration::from_millis(config.heartbeat_timeout_ms),
            )),
            tokio::spawn(requeue_at_deadlines(engine.clone())),
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
        let address = listener.local_addr().map_err(ServeError::Listener)?;
        info!(%address, data_dir = %config.data_dir.display(), "gantry-schedd serving");

        // Small request/response exchanges: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs add up to 40 ms to a call.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .add_service(
                pb::scheduler_server::SchedulerServer::new(api)
                    .max_decoding_message_size(MAX_MESSAGE)
                    .max_encoding_message_size(MAX_MESSAGE),
            )
            .add_service(
                pb::raft_server::RaftServer::new(RaftService {
                    id: config.id,
                    engine: engine.clone(),
                })
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
}
