//! Raft traffic between replicas over gRPC (`gantry.v1.Raft`), on the same listen address
//! as the client API. raft-rs messages travel as opaque bytes, encoded by raft-rs itself.
//!
//! Sending never blocks the raft thread: each peer has a queue and a task that drains it
//! in batches. A message that cannot be delivered is dropped and reported, and raft-rs
//! sends it again (heartbeats and appends are retried by the protocol itself).

use std::collections::BTreeMap;
use std::time::Duration;

use gantry_proto as pb;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tracing::{debug, info, warn};

use crate::engine::{Engine, Reports, Transport};
use crate::server::MAX_MESSAGE;

/// Messages queued for one peer before new ones are dropped (and retried by raft).
const QUEUE: usize = 4096;
/// Most messages sent in one call.
const BATCH: usize = 512;

/// One peer: where it listens and the queue its sender task drains.
struct Peer {
    url: String,
    queue: mpsc::Sender<Message>,
}

pub struct GrpcTransport {
    id: u64,
    peers: BTreeMap<u64, Peer>,
    reports: Reports,
    /// Sender tasks for peers learned later run here (the raft thread is not a tokio one).
    runtime: Handle,
}

impl GrpcTransport {
    /// Starts a sender task per peer (other than `id`). Must run inside a tokio runtime.
    pub fn start(id: u64, peers: &BTreeMap<u64, String>, reports: Reports) -> GrpcTransport {
        let mut transport = GrpcTransport {
            id,
            peers: BTreeMap::new(),
            reports,
            runtime: Handle::current(),
        };
        for (&peer, url) in peers {
            transport.set_peer(peer, Some(url));
        }
        transport
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let delivered = self
                .peers
                .get(&to)
                .is_some_and(|p| p.queue.try_send(message).is_ok());
            if !delivered {
                debug!(
                    to,
                    "raft message dropped: peer unknown or its queue is full"
                );
                self.reports.unreachable(to);
            }
        }
    }

    /// Dropping a peer's queue ends its sender task.
    fn set_peer(&mut self, peer: u64, url: Option<&str>) {
        if peer == self.id {
            return;
        }
        let Some(url) = url else {
            self.peers.remove(&peer);
            return;
        };
        if self.peers.get(&peer).is_some_and(|p| p.url == url) {
            return;
        }
        let endpoint = match Endpoint::from_shared(url.to_string()) {
            Ok(endpoint) => endpoint,
            Err(e) => {
                warn!(peer, %url, error = %e, "cannot use this peer's address");
                return;
            }
        };
        // tonic spawns the channel's worker on the current runtime: be inside it.
        let _runtime = self.runtime.enter();
        let channel = endpoint
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .connect_lazy();
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = send_to_peer(self.id, peer, channel, rx, self.reports.clone());
        self.runtime.spawn(task);
        info!(peer, %url, "raft peer address");
        self.peers.insert(
            peer,
            Peer {
                url: url.to_string(),
                queue,
            },
        );
    }
}

async fn send_to_peer(
    from: u64,
    to: u64,
    channel: Channel,
    mut queue: mpsc::Receiver<Message>,
    reports: Reports,
) {
    let mut client = pb::raft_client::RaftClient::new(channel)
        .max_encoding_message_size(MAX_MESSAGE)
        .max_decoding_message_size(MAX_MESSAGE);
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match queue.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let snapshots = batch
            .iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
            .count();
        let messages = batch
            .iter()
            .filter_map(|m| m.write_to_bytes().ok())
            .collect();
        let delivered = client.send(pb::RaftBatch { from, messages }).await.is_ok();
        if !delivered {
            reports.unreachable(to);
        }
        for _ in 0..snapshots {
            reports.snapshot_sent(to, delivered);
        }
    }
}

/// The receiving side: hands every message addressed to this replica to raft.
pub struct RaftService {
    pub id: u64,
    pub engine: Engine,
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn send(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let batch = request.into_inner();
        for bytes in &batch.messages {
            let message = Message::parse_from_bytes(bytes)
                .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
            if message.to != self.id {
                return Err(Status::invalid_argument(format!(
                    "a raft message for replica {} reached replica {}",
                    message.to, self.id
                )));
            }
            self.engine
                .step(message)
                .map_err(|e| Status::unavailable(e.to_string()))?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}
