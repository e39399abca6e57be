//! One session with the scheduler over the `NodeSession.Attach` stream: register, then apply
//! every `Assignments` and report starts, ends and heartbeats until the stream breaks or the
//! scheduler stays silent for longer than the session lease (see [`crate::lease`]).

use std::error::Error as StdError;
use std::time::Duration;

use gantry_proto as pb;
use pb::node_session_client::NodeSessionClient;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Endpoint;
use tracing::{debug, info, warn};

use crate::config::Shutdown;
use crate::executor::Executor;
use crate::lease::{heartbeat_interval, lease_for};
use crate::node::{Node, message, shutdown_requested};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the scheduler may take to accept the stream.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// Used when the scheduler names no heartbeat interval.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);
/// HTTP/2 pings find a dead connection even when the scheduler has nothing to send.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a closing session waits for the scheduler to take the last reports.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) enum SessionEnd {
    /// The scheduler could not be reached at this address.
    ConnectFailed(String),
    /// The stream ended; `registered` when the scheduler had accepted the node.
    Broken { registered: bool, reason: String },
    /// Nothing came from the scheduler for `silence` (the session lease): the replica is
    /// frozen or cut off even though its connection looks open.
    Silent { registered: bool, silence: Duration },
    /// A shutdown was requested; `open` is the session, if any, for last reports.
    Shutdown {
        request: Shutdown,
        open: Option<Box<OpenSession>>,
    },
}

/// A live session, kept whole for the last reports: dropping the inbound half (or the
/// client) would reset the HTTP/2 stream, outbound reports included.
pub(crate) struct OpenSession {
    pub(crate) uplink: mpsc::UnboundedSender<pb::NodeMessage>,
    inbound: tonic::Streaming<pb::SchedulerMessage>,
    client: NodeSessionClient<tonic::transport::Channel>,
}

impl OpenSession {
    /// Ends the node's half of the stream and gives the scheduler a moment (bounded) to take
    /// the last reports and close its half.
    pub(crate) async fn close(self) {
        let OpenSession {
            uplink,
            mut inbound,
            client,
        } = self;
        drop(uplink);
        let drain = async { while let Ok(Some(_)) = inbound.message().await {} };
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, drain).await;
        drop(client);
    }
}

/// An error and its causes on one line (tonic's transport errors say little at the top).
fn error_chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn status_text(status: &tonic::Status) -> String {
    match status.source() {
        Some(source) => format!(
            "{:?}: {} ({})",
            status.code(),
            status.message(),
            error_chain(source)
        ),
        None => format!("{:?}: {}", status.code(), status.message()),
    }
}

async fn connect(url: &str) -> Result<NodeSessionClient<tonic::transport::Channel>, String> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| format!("invalid address: {}", error_chain(&e)))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint.connect().await.map_err(|e| error_chain(&e))?;
    Ok(NodeSessionClient::new(channel))
}

/// The next GPU failure; never, without a health watcher.
async fn next_fault(
    faults: &mut Option<tokio::sync::mpsc::UnboundedReceiver<crate::health::GpuFault>>,
) -> Option<crate::health::GpuFault> {
    match faults {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn tick(heartbeat: &mut Option<Interval>) {
    match heartbeat {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Runs one session against `url` until it breaks or a shutdown is requested. Job ends that
/// happen meanwhile are recorded in the node either way.
pub(crate) async fn run_session<E: Executor>(
    node: &mut Node<E>,
    url: &str,
    shutdown: &mut watch::Receiver<Option<Shutdown>>,
) -> SessionEnd {
    let connecting = connect(url);
    tokio::pin!(connecting);
    let mut client = loop {
        tokio::select! {
            request = shutdown_requested(shutdown) => return SessionEnd::Shutdown { request, open: None },
            connected = &mut connecting => match connected {
                Ok(client) => break client,
                Err(reason) => return SessionEnd::ConnectFailed(reason),
            },
            Some(ended) = node.events.recv() => {
                let _ = node.on_job_ended(ended);
            }
        }
    };

    // The registration is queued before the stream opens: a scheduler may wait for it before
    // it answers the call.
    let (uplink, outgoing) = mpsc::unbounded_channel();
    if uplink.send(node.register_message()).is_err() {
        return SessionEnd::Broken {
            registered: false,
            reason: "the outgoing stream closed".to_string(),
        };
    }
    let (attached, stopping) = {
        let attach = tokio::time::timeout(
            ATTACH_TIMEOUT,
            client.attach(UnboundedReceiverStream::new(outgoing)),
        );
        tokio::pin!(attach);
        tokio::select! {
            request = shutdown_requested(shutdown) => match request {
                Shutdown::LeaveJobs => return SessionEnd::Shutdown { request, open: None },
                // The last reports need the session: let the scheduler answer first (bounded).
                Shutdown::StopJobs => ((&mut attach).await, Some(request)),
            },
            attached = &mut attach => (attached, None),
        }
    };
    let mut inbound = match (attached, stopping) {
        (Ok(Ok(response)), _) => response.into_inner(),
        (_, Some(request)) => {
            return SessionEnd::Shutdown {
                request,
                open: None,
            };
        }
        (Ok(Err(status)), None) => return SessionEnd::ConnectFailed(status_text(&status)),
        (Err(_), None) => {
            return SessionEnd::ConnectFailed(format!(
                "the scheduler did not accept the session within {ATTACH_TIMEOUT:?}"
            ));
        }
    };
    if let Some(request) = stopping {
        return SessionEnd::Shutdown {
            request,
            open: Some(Box::new(OpenSession {
                uplink,
                inbound,
                client,
            })),
        };
    }
    debug!(server = %url, "session open, registration sent");

    let mut registered = false;
    let mut heartbeat: Option<Interval> = None;
    let mut sweep: Option<Interval> = None;
    // Until `Registered` names the interval, the default one sets the lease.
    let mut lease = lease_for(DEFAULT_HEARTBEAT);
    let mut last_heard = Instant::now();
    let broken = |registered: bool, reason: &str| SessionEnd::Broken {
        registered,
        reason: reason.to_string(),
    };
    loop {
        let mut outbox = Vec::new();
        tokio::select! {
            // In this order: a message that is already there renews the lease before the
            // lease is checked (the daemon itself may have been descheduled for a while).
            biased;
            request = shutdown_requested(shutdown) => {
                let open = Some(Box::new(OpenSession { uplink, inbound, client }));
                return SessionEnd::Shutdown { request, open };
            }
            received = inbound.message() => match received {
                Ok(Some(pb::SchedulerMessage { msg: Some(pb::scheduler_message::Msg::Registered(ack)) })) => {
                    if let Err(stale) = node.admit_leader(ack.term) {
                        return broken(false, &stale.to_string());
                    }
                    last_heard = Instant::now();
                    let period = heartbeat_interval(ack.heartbeat_interval_ms, DEFAULT_HEARTBEAT);
                    lease = lease_for(period);
                    let fenced_after = node.contact.registered(Duration::from_millis(ack.heartbeat_timeout_ms), period);
                    if let Some(after) = fenced_after.filter(|after| *after <= lease) {
                        warn!(server = %url, fenced_after = ?after, session_lease = ?lease, "the scheduler's heartbeat timeout is so short that this node's jobs are stopped after {after:?} without contact, before a new leader can be found; raise heartbeat_timeout");
                    }
                    let mut interval = tokio::time::interval_at(last_heard + period, period);
                    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                    heartbeat = Some(interval);
                    if sweep.is_none() {
                        let every = node.sweep_every;
                        let mut interval = tokio::time::interval_at(last_heard + every, every);
                        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
                        sweep = Some(interval);
                    }
                    if !registered {
                        info!(server = %url, node = %ack.node, heartbeat = ?period, lease = ?lease, fenced_after = ?fenced_after, "registered with the scheduler");
                    }
                    if ack.node != node.name() {
                        warn!(server = %url, "the scheduler registered this node as {:?}, not {:?}", ack.node, node.name());
                    }
                    if !ack.cluster.is_empty() {
                        node.cluster = Some(ack.cluster.clone());
                    }
                    registered = true;
                }
                Ok(Some(pb::SchedulerMessage { msg: Some(pb::scheduler_message::Msg::Assignments(assignments)) })) => {
                    // Also the keepalive that renews the leases when nothing changed.
                    last_heard = Instant::now();
                    if registered {
                        node.contact.renew();
                    }
                    debug!(jobs = assignments.jobs.len(), "assignments received");
                    outbox = node.apply(&assignments);
                }
                Ok(Some(pb::SchedulerMessage { msg: Some(pb::scheduler_message::Msg::CheckpointsEnded(ended)) })) => {
                    last_heard = Instant::now();
                    node.on_checkpoints_ended(&ended.job_ids);
                }
                Ok(Some(pb::SchedulerMessage { msg: None })) => {
                    // Empty, but the scheduler is alive.
                    last_heard = Instant::now();
                    if registered {
                        node.contact.renew();
                    }
                    debug!("empty scheduler message ignored");
                }
                Ok(None) => return broken(registered, "the scheduler closed the stream"),
                Err(status) => return broken(registered, &status_text(&status)),
            },
            Some(ended) = node.events.recv() => outbox.extend(node.on_job_ended(ended)),
            Some(fault) = next_fault(&mut node.gpu_faults) => outbox.push(node.on_gpu_fault(fault)),
            () = tick(&mut heartbeat) => outbox.push(message(pb::node_message::Msg::Heartbeat(pb::Heartbeat {}))),
            () = tick(&mut sweep) => outbox.extend(node.checkpoint_sweep()),
            () = tokio::time::sleep_until(last_heard + lease) => {
                return SessionEnd::Silent { registered, silence: last_heard.elapsed() };
            }
        }
        for report in outbox {
            if uplink.send(report).is_err() {
                // Reports that did not make it are in the next registration.
                return broken(registered, "the outgoing stream closed");
            }
        }
    }
}
