//! Placement: which host a new task goes to, and the CPU and memory it reserves there.
//!
//! Each host's reservations are one record, `allocations/<host id>`, apart from the host record
//! so that heartbeats never conflict with placements. A task's reservation is written in the
//! transaction that writes the task, compared on the allocation record's revision, and
//! released in the transaction that records the task STOPPED (whoever does that): two servers
//! placing at once never overbook a host, the one that loses the race decides again.

use std::collections::HashMap;

use flotilla_host::{Host, HostStatus};
use flotilla_store::{Compare, Op, Revision, Txn};
use flotilla_types::TaskSize;
use serde::{Deserialize, Serialize};

use crate::record::{decode, encode, load};
use crate::{Control, ControlError};

pub(crate) const ALLOCATIONS: &str = "allocations/";

pub(crate) fn allocation_key(host_id: &str) -> String {
    format!("{ALLOCATIONS}{host_id}")
}

/// What the tasks placed on one host reserve there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub cpu: u32,
    pub memory: u32,
    pub tasks: u32,
}

impl Allocation {
    fn add(&mut self, other: Allocation) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.tasks += other.tasks;
    }

    fn take(&mut self, other: Allocation) {
        self.cpu = self.cpu.saturating_sub(other.cpu);
        self.memory = self.memory.saturating_sub(other.memory);
        self.tasks = self.tasks.saturating_sub(other.tasks);
    }
}

/// What one task reserves on its host (its task-level size, as Fargate sizes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    pub cpu: u32,
    pub memory: u32,
}

impl From<TaskSize> for Reservation {
    fn from(size: TaskSize) -> Reservation {
        Reservation { cpu: size.cpu, memory: size.memory }
    }
}

/// ECS's failure reasons when no host can take a task.
pub(crate) const NO_CPU: &str = "RESOURCE:CPU";
pub(crate) const NO_MEMORY: &str = "RESOURCE:MEMORY";
/// The host runs as many tasks as its `--max-tasks` allows (ECS's reasons name the resource).
pub(crate) const NO_TASKS: &str = "RESOURCE:TASKS";
/// The host's agent is not connected (ECS's `AGENT`).
pub(crate) const NO_AGENT: &str = "AGENT";

struct Slot {
    host: Host,
    /// As placed so far: what is committed and every placement since.
    allocation: Allocation,
    /// The allocation record as read or last committed by [`Placer::group_committed`].
    stored: Allocation,
    /// The allocation record's revision as read; `None` when it did not exist.
    revision: Option<Revision>,
    changed: bool,
}

impl Slot {
    fn free(&self) -> (u32, u32) {
        (
            self.host.spec.cpu.saturating_sub(self.allocation.cpu),
            self.host.spec.memory.saturating_sub(self.allocation.memory),
        )
    }

    /// Why `size` does not fit, or `None` when it does.
    fn misfit(&self, size: Reservation) -> Option<&'static str> {
        if self.host.status == HostStatus::Lost {
            return Some(NO_AGENT);
        }
        let (cpu, memory) = self.free();
        if cpu < size.cpu {
            Some(NO_CPU)
        } else if memory < size.memory {
            Some(NO_MEMORY)
        } else if self.host.spec.max_tasks.is_some_and(|max| self.allocation.tasks >= max) {
            Some(NO_TASKS)
        } else {
            None
        }
    }

    /// Free room as a share of capacity (0 to 2048), for "the emptiest host first".
    fn room(&self) -> u64 {
        let (cpu, memory) = self.free();
        let share = |free: u32, total: u32| u64::from(free) * 1024 / u64::from(total.max(1));
        share(cpu, self.host.spec.cpu) + share(memory, self.host.spec.memory)
    }
}

/// The hosts and their allocations as read at one moment, and what placements made of them
/// since: one placer per RunTask or scheduler pass, written back with [`Placer::commit_ops`].
pub(crate) struct Placer {
    slots: Vec<Slot>,
}

/// Where a [`Placer`] stood, to tell what placements made since ([`Placer::since`]).
pub(crate) struct Mark(Vec<Allocation>);

/// What some placements added to each host (slot index, allocation added): one service's
/// share of a group commit, taken back out alone when its entry does not commit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Delta(Vec<(usize, Allocation)>);

impl Delta {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hosts touched: each adds one compare and one write to a transaction.
    pub(crate) fn hosts(&self) -> usize {
        self.0.len()
    }
}

/// A task no host could take: each host considered, with why (ECS's `failures` reasons).
#[derive(Debug, Clone, Default)]
pub(crate) struct Unplaced {
    pub hosts: Vec<(String, &'static str)>,
}

impl Unplaced {
    /// The closest host's reason, for a service event.
    pub(crate) fn closest(&self) -> Option<&(String, &'static str)> {
        self.hosts
            .iter()
            .find(|(_, r)| *r == NO_MEMORY)
            .or_else(|| self.hosts.iter().find(|(_, r)| *r == NO_CPU))
            .or(self.hosts.first())
    }
}

impl Placer {
    /// True when no host is registered: tasks then wait in PROVISIONING, hostless, and the
    /// first host to register adopts them (a single machine starting up).
    pub(crate) fn no_hosts(&self) -> bool {
        self.slots.is_empty()
    }

    /// A zone "has hosts" when a host is registered in it; a zone without any is served by
    /// every host (one machine stands in for all the region's zones, as `flotilla up` does).
    pub(crate) fn serves(&self, zone: &str) -> bool {
        self.slots.iter().any(|s| s.host.spec.availability_zone == zone)
    }

    /// Places one task of `size` in `zone` (any zone when `None`): among the hosts there that
    /// are ACTIVE and have room, those with the fewest of `spread`'s tasks; of them, the
    /// roomier of two picked at random ("power of two choices": nearly as even as always
    /// taking the emptiest, without every concurrent placer choosing the same host and all
    /// but one losing the compare-and-write). Reserves its size there and returns the host.
    pub(crate) fn place(
        &mut self,
        zone: Option<&str>,
        size: Reservation,
        spread: &HashMap<String, usize>,
    ) -> Result<&Host, Unplaced> {
        let zoned = zone.filter(|z| self.serves(z));
        let mut unplaced = Unplaced::default();
        let mut fewest: Vec<usize> = Vec::new();
        let mut least = usize::MAX;
        for (i, slot) in self.slots.iter().enumerate() {
            if zoned.is_some_and(|z| slot.host.spec.availability_zone != z) {
                continue;
            }
            if let Some(reason) = slot.misfit(size) {
                unplaced.hosts.push((slot.host.spec.id.clone(), reason));
                continue;
            }
            let count = spread.get(&slot.host.spec.id).copied().unwrap_or(0);
            if count < least {
                least = count;
                fewest.clear();
            }
            if count == least {
                fewest.push(i);
            }
        }
        let i = match fewest.len() {
            0 => return Err(unplaced),
            1 => fewest[0],
            n => {
                let r = uuid::Uuid::new_v4().as_u128();
                let a = fewest[(r % n as u128) as usize];
                let b = fewest[((r >> 64) % n as u128) as usize];
                if self.slots[b].room() > self.slots[a].room() { b } else { a }
            }
        };
        let slot = &mut self.slots[i];
        slot.allocation.add(Allocation { cpu: size.cpu, memory: size.memory, tasks: 1 });
        slot.changed = true;
        Ok(&slot.host)
    }

    /// Each host with its allocation (as placed so far), by host id.
    pub(crate) fn hosts(&self) -> impl Iterator<Item = (&Host, Allocation)> {
        self.slots.iter().map(|s| (&s.host, s.allocation))
    }

    /// Where the placer stands now.
    pub(crate) fn mark(&self) -> Mark {
        Mark(self.slots.iter().map(|s| s.allocation).collect())
    }

    /// What placements added since `mark`.
    pub(crate) fn since(&self, mark: &Mark) -> Delta {
        let mut delta = Vec::new();
        for (i, (slot, before)) in self.slots.iter().zip(&mark.0).enumerate() {
            if slot.allocation != *before {
                let mut added = slot.allocation;
                added.take(*before);
                delta.push((i, added));
            }
        }
        Delta(delta)
    }

    /// Takes placements that will not commit back out (placements made on top of them stay:
    /// they only had less room than they could have had).
    pub(crate) fn take_back(&mut self, delta: &Delta) {
        for (i, added) in &delta.0 {
            self.slots[*i].allocation.take(*added);
        }
    }

    /// The compares and writes that commit `deltas` (placed by entries of one group) on top
    /// of what is stored: each host touched compared on the revision last read or committed,
    /// and written once with the stored allocation plus the group's deltas. Placements not in
    /// the group (made since, committed later) are left out.
    pub(crate) fn group_ops<'d>(&self, mut txn: Txn, deltas: impl IntoIterator<Item = &'d Delta>) -> Txn {
        for (i, allocation) in self.group_sums(deltas) {
            let slot = &self.slots[i];
            let key = allocation_key(&slot.host.spec.id);
            let compare = match slot.revision {
                Some(rev) => Compare::revision(&key, rev),
                None => Compare::absent(&key),
            };
            txn = txn.when(compare).then(Op::put(&key, encode(&allocation)));
        }
        txn
    }

    /// The group of `deltas` committed at `revision`: later groups compare on it.
    pub(crate) fn group_committed<'d>(&mut self, deltas: impl IntoIterator<Item = &'d Delta>, revision: Revision) {
        for (i, allocation) in self.group_sums(deltas) {
            self.slots[i].stored = allocation;
            self.slots[i].revision = Some(revision);
        }
    }

    /// Each host the deltas touch, with its stored allocation plus the deltas.
    fn group_sums<'d>(&self, deltas: impl IntoIterator<Item = &'d Delta>) -> Vec<(usize, Allocation)> {
        let mut sums: std::collections::BTreeMap<usize, Allocation> = Default::default();
        for delta in deltas {
            for (i, added) in &delta.0 {
                sums.entry(*i).or_insert(self.slots[*i].stored).add(*added);
            }
        }
        sums.into_iter().collect()
    }

    /// The compares and writes that make this placer's reservations real, added to `txn`.
    pub(crate) fn commit_ops(&self, mut txn: Txn) -> Txn {
        for slot in self.slots.iter().filter(|s| s.changed) {
            let key = allocation_key(&slot.host.spec.id);
            let compare = match slot.revision {
                Some(rev) => Compare::revision(&key, rev),
                None => Compare::absent(&key),
            };
            txn = txn.when(compare).then(Op::put(&key, encode(&slot.allocation)));
        }
        txn
    }
}

impl Control {
    /// Every host with its allocation, as read now.
    pub(crate) async fn placer(&self) -> Result<Placer, ControlError> {
        let hosts = self.hosts().await?;
        let mut allocations: HashMap<String, (Allocation, Revision)> = HashMap::new();
        for kv in self.store.list_prefix(ALLOCATIONS).await? {
            let id = kv.key[ALLOCATIONS.len()..].to_owned();
            allocations.insert(id, (decode(&kv)?, kv.mod_revision));
        }
        let mut slots: Vec<Slot> = hosts
            .into_iter()
            .map(|host| {
                let found = allocations.remove(&host.spec.id);
                let stored = found.map(|(a, _)| a).unwrap_or_default();
                Slot { allocation: stored, stored, revision: found.map(|(_, r)| r), host, changed: false }
            })
            .collect();
        slots.sort_by(|a, b| a.host.spec.id.cmp(&b.host.spec.id));
        Ok(Placer { slots })
    }

    /// The allocation of one host with its record's revision.
    pub(crate) async fn allocation(&self, host_id: &str) -> Result<(Allocation, Option<Revision>), ControlError> {
        Ok(match load::<Allocation>(self.store.as_ref(), &allocation_key(host_id)).await? {
            Some((a, rev)) => (a, Some(rev)),
            None => (Allocation::default(), None),
        })
    }

    /// Adds to `txn` the release of `reservation` on `host_id`, compared on the allocation
    /// record as read now (a conflict makes the caller's transaction retry).
    pub(crate) async fn release_ops(
        &self,
        mut txn: Txn,
        host_id: &str,
        reservation: Reservation,
    ) -> Result<Txn, ControlError> {
        let key = allocation_key(host_id);
        let (mut allocation, revision) = self.allocation(host_id).await?;
        allocation.cpu = allocation.cpu.saturating_sub(reservation.cpu);
        allocation.memory = allocation.memory.saturating_sub(reservation.memory);
        allocation.tasks = allocation.tasks.saturating_sub(1);
        let compare = match revision {
            Some(rev) => Compare::revision(&key, rev),
            None => Compare::absent(&key),
        };
        txn = txn.when(compare).then(Op::put(&key, encode(&allocation)));
        Ok(txn)
    }
}
