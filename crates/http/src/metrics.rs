//! The Prometheus plumbing every fractile process shares: a registry per process (or per
//! app, in tests) that includes the process collector and the span export's counters, and
//! the text exposition.

use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A new registry with the process collector (CPU seconds, resident memory, open fds)
/// registered (only the crate's default registry has it otherwise), the span export's
/// counters ([`crate::trace::ExportMetrics`], one set per process, shared by its registries)
/// and the build's identity (`fractile_build_info`, [`crate::build_info`]).
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    crate::trace::export_metrics().register(&registry)?;
    crate::build_info::register(&registry)?;
    #[cfg(target_os = "linux")]
    {
        registry.register(Box::new(process::ProcessMetrics::for_self()))?;
        registry.register(Box::new(process::ListenOverflows::new()?))?;
    }
    Ok(registry)
}

#[cfg(target_os = "linux")]
mod process {
    //! The prometheus crate's process collector, with `process_cpu_seconds_total` at the
    //! kernel's tick resolution: the crate divides ticks by ticks-per-second in integers, so
    //! its counter moves in whole seconds, and a rate over a short window (a dashboard's,
    //! an autoscaler model's) reads 0 or 1 core for a process using 0.1.

    use prometheus::core::{Collector, Desc};
    use prometheus::process_collector::ProcessCollector;
    use prometheus::proto::{Counter, MetricFamily};
    use prometheus::{IntCounter, Opts};

    /// The name of the family this collector corrects.
    const CPU_SECONDS: &str = "process_cpu_seconds_total";

    /// [`ProcessCollector`] with CPU seconds read to the tick.
    pub struct ProcessMetrics {
        inner: ProcessCollector,
    }

    impl ProcessMetrics {
        /// Metrics of this process.
        pub fn for_self() -> ProcessMetrics {
            ProcessMetrics {
                inner: ProcessCollector::for_self(),
            }
        }
    }

    /// User plus system CPU time of this process, in seconds; `None` if /proc is unreadable.
    pub fn cpu_seconds() -> Option<f64> {
        let stat = procfs::process::Process::myself().ok()?.stat().ok()?;
        let ticks = stat.utime.saturating_add(stat.stime);
        Some(ticks as f64 / procfs::ticks_per_second() as f64)
    }

    impl Collector for ProcessMetrics {
        fn desc(&self) -> Vec<&Desc> {
            self.inner.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            let mut families = self.inner.collect();
            // Without /proc the inner collector has nothing either; keep what it has.
            if let Some(seconds) = cpu_seconds() {
                for family in families.iter_mut().filter(|f| f.name() == CPU_SECONDS) {
                    for metric in family.mut_metric() {
                        let mut counter = Counter::default();
                        counter.set_value(seconds);
                        metric.set_counter(counter);
                    }
                }
            }
            families
        }
    }

    /// `tcp_listen_overflows_total`: connections the kernel dropped because a listen queue
    /// was full, read from `/proc/self/net/netstat` (`TcpExt: ListenOverflows`) at each
    /// scrape. The count is the network namespace's: a container's or a pod's own, every
    /// process's on a shared host. It is how the listen backlog (`net.core.somaxconn`, see
    /// `serve::bind`) says it bit: a client whose SYN was dropped retries a second later,
    /// and a load balancer in front may meanwhile have given up on the server.
    pub struct ListenOverflows {
        opts: Opts,
        /// Describes the family; the values come from the kernel at each collection.
        described: IntCounter,
    }

    impl ListenOverflows {
        /// The collector; reads nothing until collected.
        pub fn new() -> Result<Self, prometheus::Error> {
            let opts = Opts::new(
                "tcp_listen_overflows_total",
                "Connections dropped because a listen queue was full, in this network \
                 namespace (the kernel's TcpExt ListenOverflows).",
            );
            Ok(ListenOverflows {
                described: IntCounter::with_opts(opts.clone())?,
                opts,
            })
        }
    }

    /// `ListenOverflows` from the two `TcpExt:` lines of `/proc/net/netstat` (names, values).
    pub fn listen_overflows(netstat: &str) -> Option<u64> {
        let mut tcp_ext = netstat.lines().filter(|l| l.starts_with("TcpExt:"));
        let (names, values) = (tcp_ext.next()?, tcp_ext.next()?);
        let at = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        values.split_whitespace().nth(at)?.parse().ok()
    }

    impl Collector for ListenOverflows {
        fn desc(&self) -> Vec<&Desc> {
            self.described.desc()
        }

        fn collect(&self) -> Vec<MetricFamily> {
            // A counter of its own per collection: concurrent scrapes cannot mix their reads.
            let read = std::fs::read_to_string("/proc/self/net/netstat").ok();
            match (
                read.as_deref().and_then(listen_overflows),
                IntCounter::with_opts(self.opts.clone()),
            ) {
                (Some(total), Ok(counter)) => {
                    counter.inc_by(total);
                    counter.collect()
                }
                _ => Vec::new(),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn listen_overflows_are_read_from_the_tcp_ext_lines() {
            let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\n\
                           TcpExt: 3 2170 2171\n\
                           IpExt: InNoRoutes\nIpExt: 0\n";
            assert_eq!(listen_overflows(netstat), Some(2170));
            assert_eq!(listen_overflows("IpExt: InNoRoutes\nIpExt: 0\n"), None);
            // This machine's own file has the counter.
            let own = std::fs::read_to_string("/proc/self/net/netstat").expect("procfs");
            assert!(listen_overflows(&own).is_some(), "{own}");
        }

        #[test]
        fn cpu_seconds_are_exported_to_the_tick_not_in_whole_seconds() {
            // Burn CPU until this process's time is well inside a second, so a value
            // truncated to whole seconds would be visibly below it.
            let mut x = 0u64;
            let before = loop {
                for i in 0..100_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
                let Some(now) = cpu_seconds() else {
                    panic!("/proc/self/stat is unreadable on Linux");
                };
                if (0.1..0.9).contains(&now.fract()) {
                    break now;
                }
            };
            let exported = ProcessMetrics::for_self()
                .collect()
                .into_iter()
                .find(|f| f.name() == CPU_SECONDS)
                .and_then(|f| f.get_metric().first().map(|m| m.get_counter().get_value()));
            let Some(exported) = exported else {
                panic!("{CPU_SECONDS} is not exported");
            };
            assert!(exported >= before, "{exported} < {before}: truncated");
            assert!(exported < before + 0.5, "{exported} is far past {before}");
        }
    }
}

/// The text exposition of everything in `registry`.
pub fn encode(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut out = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut out)?;
    String::from_utf8(out).map_err(|e| prometheus::Error::Msg(e.to_string()))
}

/// Why a connection was closed by a limit of the accept loop (`http_connections_closed_total`'s
/// `reason` label): a head sent too slowly, a response the client stopped reading, a head
/// beyond hyper's hard limit, or a request hyper could not parse.
pub const CLOSE_REASONS: [&str; 4] = [
    "header_timeout",
    "write_timeout",
    "head_too_large",
    "malformed",
];

/// The connection metrics of every listener of a process, labelled `listener`:
/// `http_connections_open`, `http_connections_rejected_total` (turned away at the cap) and
/// `http_connections_closed_total{reason}` (closed by a limit; see [`CLOSE_REASONS`]).
#[derive(Clone)]
pub struct ConnectionMetrics {
    open: IntGaugeVec,
    rejected: IntCounterVec,
    closed: IntCounterVec,
}

impl ConnectionMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = ConnectionMetrics {
            open: IntGaugeVec::new(
                Opts::new(
                    "http_connections_open",
                    "Open HTTP connections, by listener.",
                ),
                &["listener"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "http_connections_rejected_total",
                    "Connections closed at once because the listener's connection cap was reached.",
                ),
                &["listener"],
            )?,
            closed: IntCounterVec::new(
                Opts::new(
                    "http_connections_closed_total",
                    "Connections closed by a limit: header_timeout, write_timeout, head_too_large, malformed.",
                ),
                &["listener", "reason"],
            )?,
        };
        registry.register(Box::new(metrics.open.clone()))?;
        registry.register(Box::new(metrics.rejected.clone()))?;
        registry.register(Box::new(metrics.closed.clone()))?;
        Ok(metrics)
    }

    /// The handles of one listener, every series created now so each is exported from the
    /// start (a counter that appears only when it first moves hides its first increase from
    /// `rate()`).
    pub fn listener(&self, listener: &'static str) -> ListenerMetrics {
        for reason in CLOSE_REASONS {
            self.closed.with_label_values(&[listener, reason]);
        }
        ListenerMetrics {
            listener,
            open: self.open.with_label_values(&[listener]),
            rejected: self.rejected.with_label_values(&[listener]),
            closed: self.closed.clone(),
        }
    }
}

/// One listener's connection metrics (see [`ConnectionMetrics`]).
#[derive(Clone)]
pub struct ListenerMetrics {
    /// The `listener` label: `traffic` or `admin`.
    pub listener: &'static str,
    /// `http_connections_open{listener}`.
    pub open: IntGauge,
    /// `http_connections_rejected_total{listener}`.
    pub rejected: IntCounter,
    closed: IntCounterVec,
}

impl ListenerMetrics {
    /// `http_connections_closed_total{listener, reason}`; `reason` is one of [`CLOSE_REASONS`].
    pub fn closed(&self, reason: &str) -> IntCounter {
        self.closed.with_label_values(&[self.listener, reason])
    }

    /// Counts one connection open until the guard is dropped.
    pub fn open_guard(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// Keeps `http_connections_open` true: counted in on creation, out on drop, however the
/// connection's task ends.
pub struct OpenConnection(IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
