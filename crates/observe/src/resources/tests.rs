use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::*;

/// A `sleep 30` child, killed and reaped when dropped (also when a test fails).
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        let child = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sleep");
        Sleeper(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max data size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max core file size        0                    unlimited            bytes     
Max resident set          unlimited            unlimited            bytes     
Max processes             63704                63704                processes 
Max open files            1024                 1048576              files     
Max locked memory         8388608              8388608              bytes     
Max address space         unlimited            unlimited            bytes     
Max file locks            unlimited            unlimited            locks     
Max pending signals       63704                63704                signals   
Max msgqueue size         819200               819200               bytes     
Max nice priority         0                    0                    
Max realtime priority     0                    0                    
Max realtime timeout      unlimited            unlimited            us        
";

#[test]
fn samples_this_process() {
    let (cpu, rss) = sample(std::process::id()).expect("own /proc entry");
    assert!(cpu >= 0.0);
    assert!(rss > 1 << 20, "a test process uses more than 1 MiB: {rss}");
    assert!(sample(u32::MAX).is_none());
}

#[test]
fn parses_the_soft_limits() {
    let l = parse_limits(LIMITS, Some(127_409));
    assert_eq!(l.fd_limit, Some(1024), "the soft limit, not the hard one");
    assert_eq!(l.thread_limit, Some(63_704));
    assert_eq!(parse_limits(LIMITS, Some(1000)).thread_limit, Some(1000));
    assert_eq!(parse_limits(LIMITS, None).thread_limit, Some(63_704));
    let unlimited = LIMITS
        .replace(
            "Max processes             63704",
            "Max processes             unlimited",
        )
        .replace(
            "Max open files            1024 ",
            "Max open files            unlimited ",
        );
    let l = parse_limits(&unlimited, Some(127_409));
    assert_eq!(l.fd_limit, None);
    assert_eq!(l.thread_limit, Some(127_409), "threads-max caps unlimited");
    assert_eq!(parse_limits(&unlimited, None), Limits::default());
    assert_eq!(parse_limits("", None), Limits::default());
}

#[test]
fn samples_a_child_process() {
    let child = Sleeper::start();
    let limits = limits(child.pid());
    let s = replica_sample("web", 1, child.pid(), limits).expect("the child's /proc entry");
    assert_eq!(
        (s.service.as_str(), s.index, s.pid),
        ("web", 1, child.pid())
    );
    let fds = s.fds.expect("fds");
    assert!(
        (3..64).contains(&fds),
        "stdin, stdout, stderr and little else: {fds}"
    );
    assert_eq!(s.threads, Some(1), "sleep has one thread");
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let inherited = (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft);
    assert_eq!(
        s.fd_limit, inherited,
        "the child inherits this process's limit"
    );
    let cap = s.thread_limit.expect("thread limit");
    assert!(cap >= 1, "{cap}");
    assert!(open_fds(u32::MAX).is_none() && threads(u32::MAX).is_none());
    assert_eq!(super::limits(u32::MAX), Limits::default());
}

#[derive(Default)]
struct Collect(Mutex<Vec<Vec<Sample>>>);

impl SampleSink for Collect {
    fn samples(&self, _at: Instant, samples: &[Sample]) {
        self.0.lock().unwrap().push(samples.to_vec());
    }
}

impl Collect {
    /// Waits for a round, from the `from`th on, that `want` accepts.
    async fn until(&self, from: usize, want: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
        for _ in 0..200 {
            if let Some(r) = self.0.lock().unwrap()[from..].iter().find(|r| want(r)) {
                return r.clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no such round: {:?}", self.0.lock().unwrap().last());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sampler_feeds_the_sink_and_drops_an_exited_replica() {
    let child = Sleeper::start();
    let bus = Arc::new(Bus::new(100));
    let mut registry = Registry::default();
    let sink = Arc::new(Collect::default());
    let task = spawn(
        &bus,
        &mut registry,
        Duration::from_millis(20),
        Some(sink.clone()),
    );
    bus.publish(EventKind::ReplicaStarted {
        service: "web".into(),
        index: 0,
        pid: child.pid(),
        port: 1,
    });
    let round = sink.until(0, |r| !r.is_empty()).await;
    assert_eq!(round[0].pid, child.pid());
    assert!(round[0].fds.is_some() && round[0].threads == Some(1));
    let text = crate::encode_openmetrics(&registry);
    assert!(
        text.contains("bulwark_replica_open_fds{service=\"web\",replica=\"0\"}")
            && text.contains("bulwark_replica_threads{service=\"web\",replica=\"0\"} 1"),
        "{text}"
    );
    let seen = sink.0.lock().unwrap().len();
    bus.publish(EventKind::ReplicaExited {
        service: "web".into(),
        index: 0,
        pid: child.pid(),
        exit: bus::Exit {
            code: None,
            signal: Some(9),
        },
        uptime_ms: 1,
    });
    // A round that starts after the exit was handled samples nobody.
    sink.until(seen, <[Sample]>::is_empty).await;
    let text = crate::encode_openmetrics(&registry);
    assert!(
        !text.contains("bulwark_replica_open_fds{") && !text.contains("bulwark_replica_threads{"),
        "{text}"
    );
    task.abort();
}
