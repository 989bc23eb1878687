//! The nftables side: running `nft` (one `nft -f -` transaction per change, all or nothing) and
//! the text of every rule, set and chain this crate owns. See README.md for the ruleset.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard};

use ipnet::Ipv4Net;

use crate::endpoint::{TASK_ENDPOINT, TASK_ENDPOINT_PORT};
use crate::error::{NetError, Object};
use crate::spec::{Peer, Protocol, Rule, VXLAN_PORT, VpcStatus, fnv1a64, nft_name};

/// Runs `nft`, in the host namespace when that is not ours.
///
/// Transactions submitted at the same time share one `nft -f` run (group commit, as the
/// store's fsyncs do): one caller runs everything waiting as one transaction while the others
/// wait for its outcome. Each `nft` run costs a process and a read of the table, far more than
/// the elements one task adds or removes, so ten stops at once cost about one run, not ten.
/// A combined transaction that fails is applied again script by script, so each caller gets its
/// own verdict and one bad script never takes the others down with it.
pub(crate) struct Nft {
    netns: Option<File>,
    queue: Mutex<Queue>,
    turn: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Scripts submitted and not yet taken by a run, in submission order.
    waiting: Vec<Submitted>,
    next_ticket: u64,
    /// A caller is running `nft` for a batch now.
    running: bool,
    outcomes: HashMap<u64, Result<(), NetError>>,
}

struct Submitted {
    ticket: u64,
    object: Object,
    text: String,
}

impl Nft {
    pub fn new(netns: Option<File>) -> Self {
        Nft { netns, queue: Mutex::new(Queue::default()), turn: Condvar::new() }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nft");
        command.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(netns) = &self.netns {
            let fd = netns.as_raw_fd();
            // SAFETY: the closure only calls setns(2), which is async-signal-safe, on a
            // descriptor that `self` keeps open for the whole spawn.
            unsafe {
                command.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        command
    }

    fn run(&self, object: &Object, args: &[&str], stdin: &str) -> Result<String, NetError> {
        let spawn_error = |source| NetError::Spawn { object: object.clone(), command: "nft", source };
        let mut child = self.command(args).spawn().map_err(spawn_error)?;
        let mut input = child.stdin.take().expect("stdin is piped");
        let written = input.write_all(stdin.as_bytes());
        drop(input);
        let output = child.wait_with_output().map_err(spawn_error)?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            return Err(NetError::Nft { object: object.clone(), stderr });
        }
        written.map_err(spawn_error)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Applies `script` as one transaction, possibly in the same `nft` run as scripts other
    /// threads submit meanwhile (in submission order: a script sees the ones before it).
    pub fn apply(&self, object: &Object, script: &Script) -> Result<(), NetError> {
        if script.text.is_empty() {
            return Ok(());
        }
        let mut queue = self.queue();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push(Submitted { ticket, object: object.clone(), text: script.text.clone() });
        loop {
            if let Some(outcome) = queue.outcomes.remove(&ticket) {
                return outcome;
            }
            if queue.running {
                queue = self.turn.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner());
                continue;
            }
            queue.running = true;
            let batch = std::mem::take(&mut queue.waiting);
            drop(queue);
            let outcomes = self.run_batch(batch);
            queue = self.queue();
            queue.running = false;
            queue.outcomes.extend(outcomes);
            self.turn.notify_all();
        }
    }

    /// One `nft -f` for the whole batch; script by script when that fails.
    fn run_batch(&self, batch: Vec<Submitted>) -> Vec<(u64, Result<(), NetError>)> {
        if let [one] = batch.as_slice() {
            return vec![(one.ticket, self.run(&one.object, &["-f", "-"], &one.text).map(drop))];
        }
        let text: String = batch.iter().map(|s| s.text.as_str()).collect();
        let object = batch.first().map(|s| s.object.clone()).expect("a batch is never empty");
        if self.run(&object, &["-f", "-"], &text).is_ok() {
            return batch.into_iter().map(|s| (s.ticket, Ok(()))).collect();
        }
        batch.into_iter().map(|s| (s.ticket, self.run(&s.object, &["-f", "-"], &s.text).map(drop))).collect()
    }

    /// Deletes the whole table (every chain, set and map in it).
    pub fn delete_table(&self, object: &Object, table: &str) -> Result<(), NetError> {
        self.run(object, &["delete", "table", "inet", table], "").map(drop)
    }

    /// The table as `nft -j` lists it.
    pub fn list_table(&self, object: &Object, table: &str) -> Result<serde_json::Value, NetError> {
        let out = self.run(object, &["-j", "list", "table", "inet", table], "")?;
        serde_json::from_str(&out).map_err(|source| NetError::NftListing { object: object.clone(), source })
    }
}

/// One transaction's worth of commands against one table.
pub(crate) struct Script {
    table: String,
    text: String,
}

impl Script {
    pub fn new(table: &str) -> Self {
        Script { table: table.to_string(), text: String::new() }
    }

    /// Appends `<verb> inet <table> <rest>`.
    pub fn cmd(&mut self, verb: &str, rest: std::fmt::Arguments<'_>) -> &mut Self {
        writeln!(self.text, "{verb} inet {} {rest}", self.table).expect("write to String");
        self
    }

    /// Creates `chain` if needed and replaces its rules, atomically with the rest of the script.
    pub fn replace_chain(&mut self, chain: &str, rules: &[String]) -> &mut Self {
        self.cmd("add chain", format_args!("{chain}"));
        self.cmd("flush chain", format_args!("{chain}"));
        for rule in rules {
            self.cmd("add rule", format_args!("{chain} {rule}"));
        }
        self
    }

    /// Deletes `chain` whether or not it exists.
    pub fn delete_chain(&mut self, chain: &str) -> &mut Self {
        self.cmd("add chain", format_args!("{chain}"));
        self.cmd("flush chain", format_args!("{chain}"));
        self.cmd("delete chain", format_args!("{chain}"))
    }

    /// Deletes an element whether or not it exists: `element` as `add element` takes it
    /// (`key : data` for maps), `key` as `delete element` does.
    pub fn delete_element(&mut self, set: &str, element: &str, key: &str) -> &mut Self {
        self.cmd("add element", format_args!("{set} {{ {element} }}"));
        self.cmd("delete element", format_args!("{set} {{ {key} }}"))
    }

    /// 1:1 NAT between a private address and its public one (tasks' interfaces and load
    /// balancers alike).
    pub fn map_public(&mut self, private: Ipv4Addr, public: Ipv4Addr) -> &mut Self {
        self.cmd("add element", format_args!("dnat_pub {{ {public} : {private} }}"));
        self.cmd("add element", format_args!("snat_pub {{ {private} : {public} }}"))
    }

    /// Undoes [`Script::map_public`].
    pub fn unmap_public(&mut self, private: Ipv4Addr, public: Ipv4Addr) -> &mut Self {
        self.delete_element("dnat_pub", &format!("{public} : {private}"), &public.to_string());
        self.delete_element("snat_pub", &format!("{private} : {public}"), &private.to_string())
    }

    pub fn member_set(&mut self, group: &str) -> &mut Self {
        self.cmd("add set", format_args!("{} {{ type ipv4_addr; }}", member_set(group)))
    }

    pub fn delete_member_set(&mut self, group: &str) -> &mut Self {
        self.member_set(group);
        self.cmd("delete set", format_args!("{}", member_set(group)))
    }
}

pub(crate) fn member_set(group: &str) -> String {
    format!("sgm_{}", nft_name(group))
}

pub(crate) fn ingress_chain(group: &str) -> String {
    format!("sgi_{}", nft_name(group))
}

pub(crate) fn egress_chain(group: &str) -> String {
    format!("sge_{}", nft_name(group))
}

/// The two chains judging traffic from and to every interface of one VPC with one set of
/// groups (a profile): `(ifo_<hash>, ifi_<hash>)`. Interfaces jump to their profile's chains
/// through the `egress`/`ingress` maps, so what one interface adds is set and map elements
/// only, and attaching one costs the same with a thousand others present (a chain pair per
/// interface made every `nft` run read all of them, and the kernel's commit grew with them).
pub(crate) fn profile_chains(vpc: &VpcStatus, groups: &BTreeSet<String>) -> (String, String) {
    let cidr = vpc.cidr.to_string();
    let mut parts = vec![vpc.id.as_str(), cidr.as_str()];
    parts.extend(groups.iter().map(String::as_str));
    let hash = fnv1a64(&parts);
    (format!("ifo_{hash:016x}"), format!("ifi_{hash:016x}"))
}

/// A chain that judges interfaces' traffic: a profile's, one interface's own as older versions
/// made them (`out_<veth>`, `in_<veth>`, which a start replaces), or remote interfaces'
/// (`rin_`, per remote address in older versions, replaced by the next `ensure_overlay`).
pub(crate) fn is_interface_chain(name: &str) -> bool {
    ["ifo_", "ifi_", "out_", "in_", "rin_"].iter().any(|prefix| name.starts_with(prefix))
}

/// The table, its sets and maps, and its base chains. Base chains are flushed and refilled in
/// the same transaction, so re-running this (every start) is harmless and upgrades the rules.
pub(crate) fn base_ruleset(script: &mut Script, uplink: Option<&str>) {
    script.cmd("add table", format_args!(""));
    for (name, def) in [
        // Host ends of this table's task veths.
        ("ifaces", "set ifaces { type ifname; }"),
        // Every VPC CIDR (comment: VPC id).
        ("vpc_cidrs", "set vpc_cidrs { type ipv4_addr; flags interval; }"),
        // VPC base+2 addresses (tasks may reach DNS there) and base+1/+2 (host-only otherwise).
        ("resolvers", "set resolvers { type ipv4_addr; }"),
        ("host_addrs", "set host_addrs { type ipv4_addr; }"),
        // Host link -> private IP (comment: ENI id); read back after a restart.
        ("if_ip", "map if_ip { type ifname : ipv4_addr; }"),
        // Host link . private IP: the only source address each task may send from.
        ("if_addrs", "set if_addrs { type ifname . ipv4_addr; }"),
        // Host link -> jump to its interface's chain: traffic to the task / from the task.
        ("ingress", "map ingress { type ifname : verdict; }"),
        ("egress", "map egress { type ifname : verdict; }"),
        ("dnat_pub", "map dnat_pub { type ipv4_addr : ipv4_addr; }"),
        // Load balancers' private addresses, and their listener ports -> jump to the chain
        // judging a task's connection to them.
        ("lb_addrs", "set lb_addrs { type ipv4_addr; }"),
        ("lb_in", "map lb_in { type ipv4_addr . inet_service : verdict; }"),
        ("snat_pub", "map snat_pub { type ipv4_addr : ipv4_addr; }"),
        // VXLAN devices of the overlay, and each one's chain judging what arrives from it.
        ("overlays", "set overlays { type ifname; }"),
        ("overlay_in", "map overlay_in { type ifname : verdict; }"),
        // Remote interfaces' private IPs -> their hosts' underlay addresses (comment: VPC id);
        // read back after a restart.
        ("peers", "map peers { type ipv4_addr : ipv4_addr; }"),
        // This host's underlay addresses while it has an overlay.
        ("underlay_addrs", "set underlay_addrs { type ipv4_addr; }"),
        // Remote interfaces' private IPs -> jump to the chain judging this host's load
        // balancers' connections to them by their groups (`rin_<hash>`, per set of groups).
        ("remote_in", "map remote_in { type ipv4_addr : verdict; }"),
        // Public addresses this host announces on its underlay link (`src/public.rs`).
        ("announced", "set announced { type ipv4_addr; }"),
    ]
    .into_iter()
    .chain(crate::vip::MAPS)
    {
        let (kind, rest) = def.split_once(' ').expect("definition");
        debug_assert!(rest.starts_with(name));
        script.cmd(&format!("add {kind}"), format_args!("{rest}"));
    }
    // Load balancer connections leaving through the overlay take this host's underlay address
    // (one rule, set by `ensure_overlay`): every host has every load balancer's address, so
    // only a source of this host's own brings the target's replies back here.
    script.cmd("add chain", format_args!("{OVERLAY_SNAT}"));
    let base = |script: &mut Script, name: &str, hook: &str, rules: &[&str]| {
        script.cmd("add chain", format_args!("{name} {{ {hook}; policy accept; }}"));
        let rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
        script.replace_chain(name, &rules);
    };
    // Egress is judged before DNAT, against the address the task asked for; after conntrack
    // (-200), so replies are recognised.
    base(
        script,
        "prerouting",
        "type filter hook prerouting priority -150",
        &[
            &vxlan_fast_path("daddr", "iifname"),
            "iifname vmap @egress",
            // `ovl_<dev>` ends every packet's walk (accept or drop), so the VPC's packets
            // from other hosts pay no `@ifaces` lookup.
            "iifname vmap @overlay_in",
            "iifname @ifaces drop",
        ],
    );
    // The overlay's outer packets are not tracked: the inner flows are (on both hosts), and
    // tracking the outer UDP flows too cost about a tenth of cross-host throughput
    // (`benches/overlay.rs`).
    base(
        script,
        "rawpre",
        "type filter hook prerouting priority raw",
        &[&format!("udp dport {VXLAN_PORT} ip daddr @underlay_addrs notrack")],
    );
    base(
        script,
        "rawout",
        "type filter hook output priority raw",
        &[&format!("udp dport {VXLAN_PORT} ip saddr @underlay_addrs notrack")],
    );
    // Virtual services (`src/vip.rs`): DNAT before the egress chains judge the flow.
    for (name, hook, rule) in crate::vip::CHAINS {
        base(script, name, hook, &[rule]);
    }
    base(script, "dstnat", "type nat hook prerouting priority dstnat", &["dnat ip to ip daddr map @dnat_pub"]);
    base(script, "outnat", "type nat hook output priority -100", &["dnat ip to ip daddr map @dnat_pub"]);
    // A task's VXLAN datagram to another host's underlay address would come out of that host's
    // VXLAN device as a VPC packet with any source the task wrote, past this host's
    // anti-spoofing: tasks send VXLAN only within their VPC.
    let no_vxlan_out = format!("iifname @ifaces udp dport {VXLAN_PORT} ip daddr != @vpc_cidrs drop");
    // What leaves through the overlay (jumped from `forward`, and decided there):
    script.replace_chain(
        OVERLAY_FWD,
        &[
            // Only tasks send through the overlay: what arrives through it from outside a VPC
            // is another host's load balancer, judged there.
            "iifname != @ifaces drop".to_string(),
            // TCP between hosts fits the overlay's MTU from the first segment (tasks' veths
            // run at VPC_MTU and would otherwise learn it by path MTU discovery).
            "tcp flags syn tcp option maxseg size set rt mtu".to_string(),
            "accept".to_string(),
        ],
    );
    // Every packet of every forwarded flow runs this chain, and each `iifname`/`oifname` set
    // lookup costs a copy and a hash of the name: the cheap conntrack tests come first, and
    // traffic into the overlay leaves after four lookups rather than nine (issue 12: the
    // cross-host path runs `forward` on both hosts).
    base(
        script,
        "forward",
        "type filter hook forward priority filter",
        &[
            // Nothing outside starts a connection to a task except through its public address
            // or the overlay (tasks of the VPC on other hosts).
            "ct state & (established | related) == 0 ct status & dnat == 0 oifname @ifaces iifname != @ifaces iifname != @overlays drop",
            "oifname vmap @ingress",
            "oifname @ifaces drop",
            &format!("oifname @overlays jump {OVERLAY_FWD}"),
            // VPC addresses with no live interface here or on another host never leak onto
            // the host's networks.
            "iifname @ifaces ip daddr @vpc_cidrs oifname != @overlays drop",
            &no_vxlan_out,
        ],
    );
    // Host-originated traffic to tasks meets the same ingress rules (source: VPC base+1).
    base(
        script,
        "output",
        "type filter hook output priority filter",
        &[
            &vxlan_fast_path("saddr", "oifname"),
            "oifname vmap @ingress",
            "oifname @ifaces drop",
            // This host's load balancers' connections to tasks on other hosts meet the
            // targets' ingress rules here, while their source is still the load balancer's
            // address (the target's host sees this host's underlay address instead).
            "oifname @overlays ip saddr @lb_addrs ip daddr vmap @remote_in",
            "oifname @overlays ip saddr @lb_addrs drop",
            // Only VPC addresses (and load balancers, SNAT'd) enter the overlay from here.
            "oifname @overlays ip saddr != @vpc_cidrs drop",
        ],
    );
    base(
        script,
        "input",
        "type filter hook input priority filter",
        &[
            &vxlan_fast_path("daddr", "iifname"),
            "iifname @ifaces ct state established,related accept",
            "iifname @ifaces ip daddr @resolvers meta l4proto { tcp, udp } th dport 53 accept",
            "iifname @ifaces ip daddr @resolvers icmp type echo-request accept",
            "iifname @ifaces ip daddr . tcp dport vmap @lb_in",
            // The task endpoint (metadata, role credentials): the agent's one listener.
            TASK_ENDPOINT_INPUT,
            "iifname @ifaces drop",
            "ip daddr @host_addrs iifname != \"lo\" drop",
            // Replies to a load balancer's connections to targets on other hosts (they come
            // back to this host's underlay address, un-NAT'd to the load balancer's).
            "ip daddr @lb_addrs ct direction reply accept",
            // A load balancer's private address is the VPC's: from outside the host only
            // through its public address.
            "ip daddr @lb_addrs iifname != \"lo\" ct status & dnat == 0 drop",
        ],
    );
    let masquerade = match uplink {
        Some(uplink) => format!("ip saddr @vpc_cidrs oifname {} masquerade", quote(uplink)),
        None => "ip saddr @vpc_cidrs masquerade".to_string(),
    };
    base(
        script,
        "srcnat",
        "type nat hook postrouting priority srcnat",
        &[
            "oifname @ifaces return",
            "oifname @overlays ip saddr @lb_addrs jump overlay_snat",
            // The overlay carries VPC addresses as they are.
            "oifname @overlays return",
            "snat ip to ip saddr map @snat_pub",
            masquerade.as_str(),
        ],
    );
}

/// What `input` admits from tasks to the task endpoint: TCP to its port, nothing else.
const TASK_ENDPOINT_INPUT: &str = "iifname @ifaces ip daddr 169.254.170.2 tcp dport 80 accept";

/// The chain judging traffic from a profile's interfaces (before DNAT): anti-spoofing (each
/// interface's own address, `if_addrs`), replies, the VPC resolver and the task endpoint (not
/// subject to groups, as on AWS), other VPCs' addresses, then the groups.
pub(crate) fn interface_out_rules(vpc: &VpcStatus, groups: &BTreeSet<String>) -> Vec<String> {
    let mut rules = vec![
        "meta nfproto != ipv4 drop".to_string(),
        "iifname . ip saddr != @if_addrs drop".to_string(),
        "ct state established,related accept".to_string(),
        format!("ip daddr {} accept", vpc.resolver),
        // The task endpoint, whatever the groups say (as on AWS); the source is checked above,
        // so the endpoint knows the task by it.
        format!("ip daddr {TASK_ENDPOINT} tcp dport {TASK_ENDPOINT_PORT} accept"),
        format!("ip daddr @vpc_cidrs ip daddr != {} drop", vpc.cidr),
    ];
    rules.extend(groups.iter().map(|g| format!("jump {}", egress_chain(g))));
    rules.push("drop".into());
    rules
}

/// The chain judging traffic to a profile's interfaces (forwarded or from the host).
pub(crate) fn interface_in_rules(vpc: &VpcStatus, groups: &BTreeSet<String>) -> Vec<String> {
    let mut rules = vec![
        "meta nfproto != ipv4 drop".to_string(),
        "ct state established,related accept".to_string(),
        // From outside any VPC through the overlay: another host's load balancer (SNAT'd to
        // that host's underlay address), whose host judged the connection by these groups.
        "iifname @overlays ip saddr != @vpc_cidrs accept".to_string(),
        format!("ip saddr @vpc_cidrs ip saddr != {} ct status & dnat == 0 drop", vpc.cidr),
    ];
    rules.extend(groups.iter().map(|g| format!("jump {}", ingress_chain(g))));
    rules.push("drop".into());
    rules
}

/// The chain deciding what `forward` sends into the overlay.
pub(crate) const OVERLAY_FWD: &str = "overlay_fwd";

/// Accepts the overlay's outer packets (UDP 4789 to or from this host's underlay addresses,
/// neither through a task's veth nor through a VXLAN device) at the head of a base chain whose
/// other rules all concern tasks' links, VXLAN devices or VPC addresses, so would let them
/// pass: they pass after two name lookups instead of every rule's (`dir`: `daddr` arriving,
/// `saddr` leaving; `link`: `iifname` or `oifname`).
fn vxlan_fast_path(dir: &str, link: &str) -> String {
    format!("udp dport {VXLAN_PORT} ip {dir} @underlay_addrs {link} != @ifaces {link} != @overlays accept")
}

/// The chain holding the SNAT of load balancer connections leaving through the overlay.
pub(crate) const OVERLAY_SNAT: &str = "overlay_snat";

/// The chain judging this host's load balancers' connections to the remote interfaces of one
/// VPC with one set of groups (those this host has): shared, as `profile_chains` are, so a
/// remote interface adds a `remote_in` element, not a chain every `nft` run would list.
pub(crate) fn remote_in_chain(vpc: &VpcStatus, groups: &[&String]) -> String {
    let cidr = vpc.cidr.to_string();
    let mut parts = vec!["remote", vpc.id.as_str(), cidr.as_str()];
    parts.extend(groups.iter().map(|g| g.as_str()));
    format!("rin_{:016x}", fnv1a64(&parts))
}

/// The chain judging this host's load balancers' connections to a task on another host: what
/// that task's own chain would judge (its groups, those this host has), on this host.
pub(crate) fn remote_in_rules(vpc: &VpcStatus, groups: &[&String]) -> Vec<String> {
    let mut rules = vec![
        "ct state established,related accept".to_string(),
        format!("ip saddr @vpc_cidrs ip saddr != {} drop", vpc.cidr),
    ];
    rules.extend(groups.iter().map(|g| format!("jump {}", ingress_chain(g))));
    rules.push("drop".into());
    rules
}

#[derive(Clone, Copy)]
pub(crate) enum Direction {
    Ingress,
    Egress,
}

/// One security-group rule as an nft rule that accepts what it allows.
pub(crate) fn group_rule(rule: &Rule, direction: Direction) -> String {
    let addr = match direction {
        Direction::Ingress => "ip saddr",
        Direction::Egress => "ip daddr",
    };
    let mut text = String::new();
    match &rule.peer {
        Peer::Cidr(net) if net.prefix_len() == 0 => text.push_str("meta nfproto ipv4 "),
        Peer::Cidr(net) => write!(text, "{addr} {} ", net.trunc()).unwrap(),
        Peer::SecurityGroup(group) => write!(text, "{addr} @{} ", member_set(group)).unwrap(),
    }
    match rule.protocol {
        Protocol::Tcp | Protocol::Udp => {
            let proto = if rule.protocol == Protocol::Tcp { "tcp" } else { "udp" };
            write!(text, "meta l4proto {proto} ").unwrap();
            match (rule.from_port, rule.to_port) {
                (None, None) | (Some(0), Some(65535)) => {}
                (Some(from), Some(to)) if from != to => write!(text, "th dport {from}-{to} ").unwrap(),
                (Some(port), _) | (None, Some(port)) => write!(text, "th dport {port} ").unwrap(),
            }
        }
        Protocol::Icmp => {
            text.push_str("meta l4proto icmp ");
            if let Some(ty) = rule.from_port {
                write!(text, "icmp type {ty} ").unwrap();
            }
            if let Some(code) = rule.to_port {
                write!(text, "icmp code {code} ").unwrap();
            }
        }
        Protocol::All => {}
    }
    text.push_str("accept");
    text
}

pub(crate) fn overlay_in_chain(link: &str) -> String {
    format!("ovl_{link}")
}

/// What may arrive from a VPC's VXLAN device: IPv4 within the VPC, both ends (anything else
/// was not sent by a task of the VPC on another host).
pub(crate) fn overlay_in_rules(vpc: &VpcStatus) -> Vec<String> {
    vec![
        "meta nfproto != ipv4 drop".to_string(),
        // The VPC's own traffic, nearly every packet: two comparisons, no set lookup.
        format!("ip saddr {0} ip daddr {0} accept", vpc.cidr),
        // Another host's load balancer (source: that host's underlay address).
        format!("ip saddr != @vpc_cidrs ip daddr {} accept", vpc.cidr),
        // Nothing else: every packet ends here.
        "drop".to_string(),
    ]
}

/// The chain judging tasks' connections to a load balancer address's listeners.
pub(crate) fn lb_chain(ip: Ipv4Addr) -> String {
    format!("lb_{}", ip.to_string().replace('.', "_"))
}

/// Its rules: the load balancer's groups' ingress rules, or every task of the VPC when it
/// has none (network load balancers).
pub(crate) fn lb_rules(groups: &[String]) -> Vec<String> {
    if groups.is_empty() {
        return vec!["accept".to_string()];
    }
    let mut rules: Vec<String> = groups.iter().map(|g| format!("jump {}", ingress_chain(g))).collect();
    rules.push("drop".into());
    rules
}

pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace(['"', '\\'], ""))
}

/// Adds a VPC's elements (`remove: false`) or deletes them whether present or not.
pub(crate) fn vpc_elements(script: &mut Script, vpc: &VpcStatus, remove: bool) {
    let cidr: Ipv4Net = vpc.cidr;
    let elements = [
        ("vpc_cidrs", format!("{cidr} comment {}", quote(&vpc.id)), cidr.to_string()),
        ("resolvers", vpc.resolver.to_string(), vpc.resolver.to_string()),
        ("host_addrs", vpc.router.to_string(), vpc.router.to_string()),
        ("host_addrs", vpc.resolver.to_string(), vpc.resolver.to_string()),
    ];
    for (set, element, key) in elements {
        if remove {
            script.delete_element(set, &element, &key);
        } else {
            script.cmd("add element", format_args!("{set} {{ {element} }}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(protocol: Protocol, ports: Option<(u16, u16)>, peer: Peer) -> Rule {
        Rule::new(protocol, ports, peer)
    }

    #[test]
    fn group_rules() {
        let any = Peer::Cidr("0.0.0.0/0".parse().unwrap());
        let vpc = Peer::Cidr("10.1.0.0/16".parse().unwrap());
        assert_eq!(
            group_rule(&rule(Protocol::Tcp, Some((80, 80)), vpc.clone()), Direction::Ingress),
            "ip saddr 10.1.0.0/16 meta l4proto tcp th dport 80 accept"
        );
        assert_eq!(
            group_rule(&rule(Protocol::Udp, Some((1000, 2000)), any.clone()), Direction::Egress),
            "meta nfproto ipv4 meta l4proto udp th dport 1000-2000 accept"
        );
        assert_eq!(group_rule(&rule(Protocol::All, Some((1, 2)), any), Direction::Egress), "meta nfproto ipv4 accept");
        assert_eq!(
            group_rule(&rule(Protocol::Icmp, Some((8, 0)), Peer::SecurityGroup("sg-1".into())), Direction::Ingress),
            "ip saddr @sgm_sg_1 meta l4proto icmp icmp type 8 icmp code 0 accept"
        );
        assert_eq!(
            group_rule(&rule(Protocol::Tcp, Some((0, 65535)), vpc), Direction::Egress),
            "ip daddr 10.1.0.0/16 meta l4proto tcp accept"
        );
    }

    #[test]
    fn the_task_endpoint_rule_names_its_address_and_port() {
        assert!(TASK_ENDPOINT_INPUT.contains(&format!("ip daddr {TASK_ENDPOINT} tcp dport {TASK_ENDPOINT_PORT} ")));
    }

    #[test]
    fn deletes_are_idempotent() {
        let mut script = Script::new("t");
        script.delete_element("if_ip", "\"fl1\" : 10.0.0.5", "\"fl1\"").delete_chain("in_fl1");
        assert_eq!(
            script.text,
            "add element inet t if_ip { \"fl1\" : 10.0.0.5 }\ndelete element inet t if_ip { \"fl1\" }\n\
             add chain inet t in_fl1\nflush chain inet t in_fl1\ndelete chain inet t in_fl1\n"
        );
    }
}
