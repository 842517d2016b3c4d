"""Host metrics as a prometheus-client custom collector over psutil, named like node_exporter.

Every ``collect()`` reads each psutil source once per family group (CPU times, memory,
filesystems, disks, network, ...). A group that fails (a permission error, a vanished
mount) is skipped and reported by ``node_scrape_collector_success{collector}`` = 0; it
never breaks the others.
"""

from __future__ import annotations

import logging
import os
import platform
import re
from collections.abc import Callable, Iterable, Iterator

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("ringmon.agent.host")

# CPU modes as node_exporter reports them (guest time is already included in user/nice).
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")

# Block devices node_exporter ignores by default: RAM disks, loop devices, floppies, partitions.
DEFAULT_DISK_IGNORE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]+\d+|nvme\d+n\d+p\d+|mmcblk\d+p\d+)")

# Pseudo and virtual file systems that have no meaningful size.
PSEUDO_FSTYPES = frozenset(
    {
        "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devpts",
        "devtmpfs", "fusectl", "hugetlbfs", "mqueue", "nsfs", "proc", "procfs", "pstore",
        "rpc_pipefs", "securityfs", "selinuxfs", "squashfs", "sysfs", "tracefs", "overlay_meta",
    }
)  # fmt: skip


class HostCollector(Collector):
    """System metrics of the host this process runs on, in node_exporter's names.

    ``disk_ignore``: regex of block device names to skip (default: loop, ram, partitions).
    """

    def __init__(self, *, disk_ignore: re.Pattern[str] | None = DEFAULT_DISK_IGNORE) -> None:
        self._disk_ignore = disk_ignore
        self._groups: list[tuple[str, Callable[[], Iterable[Metric]]]] = [
            ("cpu", self._cpu),
            ("loadavg", self._loadavg),
            ("meminfo", self._memory),
            ("filesystem", self._filesystem),
            ("diskstats", self._disks),
            ("netdev", self._network),
            ("processes", self._processes),
            ("stat", self._boot_time),
            ("uname", self._uname),
        ]

    def describe(self) -> Iterable[Metric]:
        # No up-front description: the label sets depend on the host. Returning nothing keeps
        # registration from running a full collect.
        return []

    def collect(self) -> Iterator[Metric]:
        success = GaugeMetricFamily(
            "node_scrape_collector_success",
            "Whether a host collector group succeeded (1) or failed (0) in this scrape.",
            labels=["collector"],
        )
        for name, group in self._groups:
            try:
                families = list(group())
            except Exception as exc:  # one group's failure must not break the others
                log.warning("host collector group failed", extra={"collector": name, "error": repr(exc)})
                success.add_metric([name], 0.0)
                continue
            success.add_metric([name], 1.0)
            yield from families
        yield success

    # -- groups ---------------------------------------------------------------------------------

    def _cpu(self) -> Iterable[Metric]:
        fam = CounterMetricFamily(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        for index, times in enumerate(psutil.cpu_times(percpu=True)):
            for mode in CPU_MODES:
                value = getattr(times, mode, None)
                if value is None:
                    continue
                if mode == "user":
                    value -= getattr(times, "guest", 0.0) or 0.0
                elif mode == "nice":
                    value -= getattr(times, "guest_nice", 0.0) or 0.0
                fam.add_metric([str(index), mode], max(float(value), 0.0))
        yield fam

    def _loadavg(self) -> Iterable[Metric]:
        one, five, fifteen = psutil.getloadavg()
        yield GaugeMetricFamily("node_load1", "1m load average.", value=one)
        yield GaugeMetricFamily("node_load5", "5m load average.", value=five)
        yield GaugeMetricFamily("node_load15", "15m load average.", value=fifteen)

    def _memory(self) -> Iterable[Metric]:
        vm = psutil.virtual_memory()
        yield GaugeMetricFamily("node_memory_MemTotal_bytes", "Total usable memory in bytes.", value=vm.total)
        yield GaugeMetricFamily(
            "node_memory_MemAvailable_bytes",
            "Memory available for new work without swapping, in bytes.",
            value=vm.available,
        )
        yield GaugeMetricFamily(
            "node_memory_MemFree_bytes", "Completely unused memory in bytes.", value=vm.free
        )
        yield GaugeMetricFamily(
            "node_memory_MemUsed_bytes",
            "Memory in use (total minus available) in bytes.",
            value=vm.total - vm.available,
        )
        for attr, name in (("buffers", "Buffers"), ("cached", "Cached")):
            value = getattr(vm, attr, None)
            if value is not None:
                yield GaugeMetricFamily(
                    f"node_memory_{name}_bytes", f"Memory used as {attr} in bytes.", value=value
                )
        sw = psutil.swap_memory()
        yield GaugeMetricFamily("node_memory_SwapTotal_bytes", "Total swap space in bytes.", value=sw.total)
        yield GaugeMetricFamily("node_memory_SwapUsed_bytes", "Swap space in use in bytes.", value=sw.used)
        yield GaugeMetricFamily("node_memory_SwapFree_bytes", "Unused swap space in bytes.", value=sw.free)

    def _filesystem(self) -> Iterable[Metric]:
        labels = ["device", "fstype", "mountpoint"]
        size = GaugeMetricFamily("node_filesystem_size_bytes", "File system size in bytes.", labels=labels)
        free = GaugeMetricFamily(
            "node_filesystem_free_bytes", "File system free space in bytes.", labels=labels
        )
        avail = GaugeMetricFamily(
            "node_filesystem_avail_bytes",
            "File system space available to non-root users in bytes.",
            labels=labels,
        )
        used = GaugeMetricFamily(
            "node_filesystem_used_bytes", "File system space in use in bytes.", labels=labels
        )
        files = GaugeMetricFamily("node_filesystem_files", "File system total inodes.", labels=labels)
        files_free = GaugeMetricFamily(
            "node_filesystem_files_free", "File system free inodes.", labels=labels
        )
        errors = GaugeMetricFamily(
            "node_filesystem_device_error", "Whether reading this file system's size failed.", labels=labels
        )
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype in PSEUDO_FSTYPES or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            key = [part.device, part.fstype, part.mountpoint]
            try:
                st = os.statvfs(part.mountpoint)
            except OSError:
                errors.add_metric(key, 1.0)
                continue
            errors.add_metric(key, 0.0)
            frsize = st.f_frsize or st.f_bsize
            size.add_metric(key, st.f_blocks * frsize)
            free.add_metric(key, st.f_bfree * frsize)
            avail.add_metric(key, st.f_bavail * frsize)
            used.add_metric(key, (st.f_blocks - st.f_bfree) * frsize)
            files.add_metric(key, st.f_files)
            files_free.add_metric(key, st.f_ffree)
        yield from (size, free, avail, used, files, files_free, errors)

    def _disks(self) -> Iterable[Metric]:
        counters = psutil.disk_io_counters(perdisk=True) or {}
        lab = ["device"]
        read_bytes = CounterMetricFamily("node_disk_read_bytes", "Bytes read from the device.", labels=lab)
        written_bytes = CounterMetricFamily(
            "node_disk_written_bytes", "Bytes written to the device.", labels=lab
        )
        reads = CounterMetricFamily("node_disk_reads_completed", "Reads completed.", labels=lab)
        writes = CounterMetricFamily("node_disk_writes_completed", "Writes completed.", labels=lab)
        io_time = CounterMetricFamily("node_disk_io_time_seconds", "Seconds spent doing I/O.", labels=lab)
        for device, c in sorted(counters.items()):
            if self._disk_ignore is not None and self._disk_ignore.match(device):
                continue
            read_bytes.add_metric([device], c.read_bytes)
            written_bytes.add_metric([device], c.write_bytes)
            reads.add_metric([device], c.read_count)
            writes.add_metric([device], c.write_count)
            busy = getattr(c, "busy_time", None)
            if busy is not None:
                io_time.add_metric([device], busy / 1000.0)
        yield from (read_bytes, written_bytes, reads, writes, io_time)

    def _network(self) -> Iterable[Metric]:
        counters = psutil.net_io_counters(pernic=True) or {}
        lab = ["device"]
        fams = {
            "bytes_recv": CounterMetricFamily("node_network_receive_bytes", "Bytes received.", labels=lab),
            "bytes_sent": CounterMetricFamily(
                "node_network_transmit_bytes", "Bytes transmitted.", labels=lab
            ),
            "packets_recv": CounterMetricFamily(
                "node_network_receive_packets", "Packets received.", labels=lab
            ),
            "packets_sent": CounterMetricFamily(
                "node_network_transmit_packets", "Packets transmitted.", labels=lab
            ),
            "errin": CounterMetricFamily("node_network_receive_errs", "Receive errors.", labels=lab),
            "errout": CounterMetricFamily("node_network_transmit_errs", "Transmit errors.", labels=lab),
            "dropin": CounterMetricFamily(
                "node_network_receive_drop", "Received packets dropped.", labels=lab
            ),
            "dropout": CounterMetricFamily(
                "node_network_transmit_drop", "Transmitted packets dropped.", labels=lab
            ),
        }
        for device, c in sorted(counters.items()):
            for attr, fam in fams.items():
                fam.add_metric([device], getattr(c, attr))
        yield from fams.values()

    def _processes(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "node_procs_total", "Number of processes on the host.", value=len(psutil.pids())
        )

    def _boot_time(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "node_boot_time_seconds",
            "Host boot time, seconds since the Unix epoch.",
            value=psutil.boot_time(),
        )
        yield GaugeMetricFamily("node_cpus", "Number of logical CPUs.", value=psutil.cpu_count() or 0)

    def _uname(self) -> Iterable[Metric]:
        u = platform.uname()
        fam = GaugeMetricFamily(
            "node_uname_info",
            "Host name and kernel, as labels.",
            labels=["nodename", "sysname", "release", "machine"],
        )
        fam.add_metric([u.node, u.system, u.release, u.machine], 1.0)
        yield fam
