//! Talking to the scheduler: parsing `--server` lists, connecting to the first replica that
//! answers, and the caller identity every mutating request carries.

use std::future::Future;
use std::time::Duration;

use gantry_model::address::{AddressError, parse_servers};
use gantry_proto as pb;
use pb::scheduler_client::SchedulerClient;
use thiserror::Error;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7420";
/// Long enough for a loaded machine, short enough that trying the next replica is quick.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A scheduler that accepted the connection but never answers should not hang the CLI.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("no scheduler address given (use --server or GANTRY_SERVER)")]
    NoAddress,
    #[error("{0} (from --server or GANTRY_SERVER)")]
    BadAddress(AddressError),
    #[error("cannot reach the Gantry scheduler at {}", describe_failures(.0))]
    Unreachable(Vec<(String, String)>),
    /// Connected, but no answer in time. Not retried elsewhere: a submit that timed out
    /// may still have been accepted.
    #[error(
        "the Gantry scheduler at {address} accepted the connection but did not answer within \
         {}s",
        REQUEST_TIMEOUT.as_secs()
    )]
    NoAnswer { address: String },
    /// The scheduler answered with an error; its message is shown as it is.
    #[error("{}", status_text(.0))]
    Rpc(Status),
}

fn describe_failures(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(address, reason)| format!("{address} ({reason})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A status as a person should read it: the message alone, or the code's meaning when the
/// server sent none.
pub fn status_text(status: &Status) -> String {
    if status.message().is_empty() {
        format!("the scheduler answered: {}", status.code().description())
    } else {
        status.message().to_string()
    }
}

/// `--server`, taken by every command that talks to the scheduler (not by `gantry dev`,
/// which is one).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ServerArgs {
    /// Scheduler address(es): host:port, http://host:port or a bare host (port 7420); a
    /// comma-separated list names several replicas, tried in order
    #[arg(
        long,
        global = true,
        env = "GANTRY_SERVER",
        value_name = "ADDRS",
        default_value = DEFAULT_SERVER
    )]
    pub server: String,
}

impl ServerArgs {
    /// The addresses as URLs tonic can dial, by the parser every Gantry program shares.
    pub fn addresses(&self) -> Result<Vec<String>, ClientError> {
        parse_servers(&self.server).map_err(|e| match e {
            AddressError::Empty => ClientError::NoAddress,
            invalid => ClientError::BadAddress(invalid),
        })
    }
}

/// A connection to whichever replica of a list answers first; it stays on that replica
/// for later calls and moves on when it stops answering.
pub struct Scheduler {
    addresses: Vec<String>,
    connected: Option<(usize, SchedulerClient<Channel>)>,
    /// The last call found replicas, but none that would serve it (no leader yet).
    electing: bool,
}

impl Scheduler {
    /// Whether the last call failed only because replicas answered that they do not lead
    /// (an election is under way): worth retrying shortly.
    pub fn electing(&self) -> bool {
        self.electing
    }

    pub fn new(addresses: Vec<String>) -> Self {
        Scheduler {
            addresses,
            connected: None,
            electing: false,
        }
    }

    /// Runs one RPC against the first replica that answers. A replica that cannot be
    /// reached, or answers `Unavailable`, is skipped; any other answer is final.
    pub async fn call<T, F, Fut>(&mut self, mut rpc: F) -> Result<T, ClientError>
    where
        F: FnMut(SchedulerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        if self.addresses.is_empty() {
            return Err(ClientError::NoAddress);
        }
        let start = self.connected.as_ref().map_or(0, |(i, _)| *i);
        let mut failures = Vec::new();
        self.electing = false;
        for offset in 0..self.addresses.len() {
            let index = (start + offset) % self.addresses.len();
            let address = &self.addresses[index];
            let client = match self.connected.take() {
                Some((i, client)) if i == index => client,
                _ => match connect(address).await {
                    Ok(client) => client,
                    Err(reason) => {
                        tracing::debug!(%address, %reason, "scheduler not reachable");
                        failures.push((address.clone(), reason));
                        continue;
                    }
                },
            };
            let sent = std::time::Instant::now();
            match rpc(client.clone()).await {
                Ok(response) => {
                    self.connected = Some((index, client));
                    return Ok(response.into_inner());
                }
                Err(status) if status.code() == Code::Unavailable => {
                    tracing::debug!(%address, message = status.message(), "scheduler unavailable");
                    self.electing = true;
                    failures.push((address.clone(), unavailable_reason(&status)));
                }
                // The connection broke under the call (the replica died mid-request): as if
                // it had been unreachable. Every call is safe to send again (submits carry
                // their idempotency key).
                Err(status) if broke_in_transit(&status) => {
                    let reason = format!("the connection broke: {}", error_reason(&status));
                    tracing::debug!(%address, %reason, "scheduler connection lost");
                    failures.push((address.clone(), reason));
                }
                // Every Gantry scheduler implements every call, so this is some other HTTP
                // server (or a much older Gantry) listening there: try the next address.
                Err(status) if status.code() == Code::Unimplemented => {
                    let reason = format!("not a Gantry scheduler: {}", status.message());
                    failures.push((address.clone(), reason));
                }
                // tonic reports its own request timeout as Cancelled.
                Err(status)
                    if status.code() == Code::Cancelled && sent.elapsed() >= REQUEST_TIMEOUT =>
                {
                    return Err(ClientError::NoAnswer {
                        address: address.clone(),
                    });
                }
                Err(status) => {
                    self.connected = Some((index, client));
                    return Err(ClientError::Rpc(status));
                }
            }
        }
        Err(ClientError::Unreachable(failures))
    }
}

/// How long [`Scheduler::call_retrying`] keeps trying while the replicas elect a leader.
const ELECTION_RETRY: Duration = Duration::from_secs(20);
/// Elections take 1–2 s: pausing longer between tries would add most of a second to a
/// failover as users see it.
const ELECTION_PAUSE_MAX: Duration = Duration::from_millis(250);

impl Scheduler {
    /// As [`Scheduler::call`], but tried again while the replicas answer that no leader
    /// is elected yet, for up to 20 s. Only for calls that are safe to repeat (a submit
    /// carries its idempotency key).
    pub async fn call_retrying<T, F, Fut>(&mut self, mut rpc: F) -> Result<T, ClientError>
    where
        F: FnMut(SchedulerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let deadline = std::time::Instant::now() + ELECTION_RETRY;
        let mut pause = Duration::from_millis(50);
        loop {
            match self.call(&mut rpc).await {
                Err(ClientError::Unreachable(_))
                    if self.electing() && std::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(ELECTION_PAUSE_MAX);
                }
                result => return result,
            }
        }
    }
}

/// A status made on this side from a transport failure, not one the scheduler sent: tonic
/// gives those code `Unknown` and keeps the transport error as the source.
fn broke_in_transit(status: &Status) -> bool {
    status.code() == Code::Unknown && std::error::Error::source(status).is_some()
}

/// The largest answer the CLI accepts, the same as the scheduler's own limit.
const MAX_ANSWER: usize = 64 * 1024 * 1024;

async fn connect(address: &str) -> Result<SchedulerClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(address.to_string())
        .map_err(|e| error_reason(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| error_reason(&e))?;
    // Long queues make long answers: tonic's default 4 MiB would cut off a listing of
    // about ten thousand jobs.
    Ok(SchedulerClient::new(channel)
        .max_decoding_message_size(MAX_ANSWER)
        .max_encoding_message_size(MAX_ANSWER))
}

/// A short reason for a failed connection: `connection refused`, `timed out`..., taken
/// from the innermost cause rather than tonic's generic "transport error".
fn error_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut innermost = error;
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io_reason(io);
        }
        innermost = e;
        current = e.source();
    }
    let text = innermost.to_string();
    if text.to_ascii_lowercase().contains("elapsed") || text.contains("timed out") {
        format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())
    } else {
        text
    }
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused".to_string(),
        ErrorKind::TimedOut => format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
        ErrorKind::ConnectionReset => "connection reset".to_string(),
        _ => strip_os_error(&io.to_string()),
    }
}

/// `Connection refused (os error 111)` reads better without the number.
fn strip_os_error(text: &str) -> String {
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text.to_string(),
    }
}

fn unavailable_reason(status: &Status) -> String {
    // tonic reports a dropped connection as Unavailable with the cause as its source.
    let source = std::error::Error::source(status);
    match source {
        Some(cause) => error_reason(cause),
        None if status.message().is_empty() => "unavailable".to_string(),
        None => status.message().to_string(),
    }
}

/// The OS user running the CLI; every mutating request names it.
pub fn caller() -> pb::Caller {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let user = match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        // A uid without a passwd entry (common in containers) still identifies the caller.
        _ => uid.as_raw().to_string(),
    };
    pb::Caller {
        user,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_status_made_from_a_broken_connection_counts_as_one() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        assert!(broke_in_transit(&Status::from_error(Box::new(reset))));
        // Sent by a scheduler: final, never retried elsewhere.
        assert!(!broke_in_transit(&Status::unknown("the scheduler said so")));
        assert!(!broke_in_transit(&Status::unavailable("not the leader")));
    }

    fn server(text: &str) -> Result<Vec<String>, ClientError> {
        ServerArgs {
            server: text.to_string(),
        }
        .addresses()
    }

    // Every form is the shared parser's test (gantry_model::address); these check what the
    // CLI adds: its default, and errors that say where the address came from.
    #[test]
    fn the_default_server_is_a_valid_address() {
        assert_eq!(server(DEFAULT_SERVER).unwrap(), vec![DEFAULT_SERVER]);
        assert_eq!(
            server("sched-1, 10.0.0.2:9000").unwrap(),
            vec!["http://sched-1:7420", "http://10.0.0.2:9000"]
        );
    }

    #[test]
    fn bad_addresses_say_why_and_where_they_came_from() {
        let err = server("a:1,https://b:2").unwrap_err();
        assert!(matches!(err, ClientError::BadAddress(_)), "{err:?}");
        // Said once: `error: {:#}` prints every source too.
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)),
            "invalid scheduler address \"https://b:2\": TLS is not supported yet; use \
             http:// (from --server or GANTRY_SERVER)"
        );
        let err = server(" , ").unwrap_err();
        assert!(matches!(err, ClientError::NoAddress), "{err:?}");
        assert_eq!(
            err.to_string(),
            "no scheduler address given (use --server or GANTRY_SERVER)"
        );
    }

    #[test]
    fn unreachable_names_every_address_tried() {
        let err = ClientError::Unreachable(vec![
            ("http://127.0.0.1:7420".into(), "connection refused".into()),
            ("http://10.0.0.2:7420".into(), "no answer within 2s".into()),
        ]);
        assert_eq!(
            err.to_string(),
            "cannot reach the Gantry scheduler at http://127.0.0.1:7420 (connection refused), \
             http://10.0.0.2:7420 (no answer within 2s)"
        );
    }

    #[test]
    fn status_messages_are_shown_without_debris() {
        let err = ClientError::Rpc(Status::not_found("job 7 does not exist"));
        assert_eq!(err.to_string(), "job 7 does not exist");
        assert!(matches!(err, ClientError::Rpc(s) if s.code() == Code::NotFound));
        let empty = ClientError::Rpc(Status::internal(""));
        assert!(empty.to_string().starts_with("the scheduler answered: "));
    }

    #[test]
    fn io_errors_read_as_short_reasons() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(error_reason(&refused), "connection refused");
        assert_eq!(
            strip_os_error("No route to host (os error 113)"),
            "No route to host"
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_reported_per_address() {
        // Bind then drop a listener so the port is very likely closed.
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let address = format!("http://127.0.0.1:{port}");
        let mut scheduler = Scheduler::new(vec![address.clone(), address.clone()]);
        let result = scheduler
            .call(|mut c| async move { c.list_nodes(pb::ListNodesRequest::default()).await })
            .await;
        match result {
            Err(ClientError::Unreachable(failures)) => {
                assert_eq!(failures.len(), 2);
                assert_eq!(
                    failures[0],
                    (address.clone(), "connection refused".to_string())
                );
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }

    #[test]
    fn the_caller_is_the_current_user() {
        let caller = caller();
        assert_eq!(caller.uid, nix::unistd::getuid().as_raw());
        assert!(!caller.user.is_empty());
    }

    #[tokio::test]
    async fn a_replica_answering_unavailable_is_skipped_and_the_next_one_kept() {
        use crate::fake_scheduler::{Fake, serve};
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let follower = Arc::new(Fake {
            unavailable: true,
            ..Default::default()
        });
        let leader = Arc::new(Fake::default());
        let stranger = Arc::new(Fake {
            unimplemented: true,
            ..Default::default()
        });
        let (a, b, c) = (
            serve(follower.clone()),
            serve(leader.clone()),
            serve(stranger.clone()),
        );
        let mut scheduler = Scheduler::new(vec![
            c.address.clone(),
            a.address.clone(),
            b.address.clone(),
        ]);
        for _ in 0..2 {
            scheduler
                .call(|mut c| async move { c.list_nodes(pb::ListNodesRequest::default()).await })
                .await
                .unwrap();
        }
        // The second call went straight to the replica that answered.
        assert_eq!(stranger.calls.load(Ordering::SeqCst), 1);
        assert_eq!(follower.calls.load(Ordering::SeqCst), 1);
        assert_eq!(leader.calls.load(Ordering::SeqCst), 2);

        // When every replica is unavailable, the error lists each with its message.
        let mut scheduler = Scheduler::new(vec![a.address.clone(), c.address.clone()]);
        let err = scheduler
            .call(|mut c| async move { c.list_nodes(pb::ListNodesRequest::default()).await })
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!(
                "cannot reach the Gantry scheduler at {} (not the leader; no leader elected \
                 yet), {} (not a Gantry scheduler: HTTP status code 404)",
                a.address, c.address
            )
        );
    }

    #[tokio::test]
    async fn other_errors_are_final_and_shown_as_the_server_wrote_them() {
        use crate::fake_scheduler::{Fake, serve};
        let server = serve(std::sync::Arc::new(Fake::default()));
        let mut scheduler = Scheduler::new(vec![server.address.clone()]);
        let err = scheduler
            .call(|mut c| async move {
                c.get_job(pb::GetJobRequest {
                    job_id: 9,
                    stale: false,
                })
                .await
            })
            .await
            .unwrap_err();
        assert!(matches!(&err, ClientError::Rpc(s) if s.code() == Code::NotFound));
        assert_eq!(err.to_string(), "job 9 does not exist");
    }
}
