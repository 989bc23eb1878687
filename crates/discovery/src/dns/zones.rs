//! The DNS view of the store: one zone per namespace, grouped by VPC, and the answers they give.
//!
//! Cloud Map creates these records for a service `web` in namespace `example.local`:
//! - `web.example.local` A / AAAA: the instances' `AWS_INSTANCE_IPV4` / `AWS_INSTANCE_IPV6`
//!   (MULTIVALUE: up to eight, shuffled; WEIGHTED: one at random);
//! - `web.example.local` SRV: `1 1 <AWS_INSTANCE_PORT> <instance-id>.web.example.local`, with
//!   A / AAAA records for each `<instance-id>.web.example.local`;
//! - `web.example.local` CNAME: the instance's `AWS_INSTANCE_CNAME`;
//! - the zone's SOA at `example.local`.
//!
//! Instances reported unhealthy through a custom health check are left out unless none is healthy.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use flotilla_store::Store;
use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as QueryType};
use rand::seq::SliceRandom;

use crate::error::Result;
use crate::record::{
    ATTR_CNAME, ATTR_IPV4, ATTR_IPV6, ATTR_PORT, DnsConfig, HealthStatus, INSTANCES, Instance, NAMESPACES, Namespace,
    RecordType, RoutingPolicy, SERVICES, Service, decode,
};

/// Route 53 answers at most eight records for a multivalue name.
const MAX_MULTIVALUE: usize = 8;
/// The payload size our responses are held to when the client's EDNS allows more.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;

struct ZoneService {
    dns: DnsConfig,
    instances: Vec<Instance>,
}

struct Zone {
    /// Lowercase, without the trailing dot.
    name: String,
    apex: Name,
    soa_ttl: u32,
    /// By the service's name under the zone, lowercase (it may hold dots: `_http._tcp`).
    services: HashMap<String, ZoneService>,
}

/// Every namespace's zone, by the VPC it belongs to.
#[derive(Default)]
pub(crate) struct Zones {
    /// Longest zone name first, so that the most specific zone wins.
    by_vpc: HashMap<String, Vec<Zone>>,
}

impl Zones {
    pub(crate) async fn load(store: &dyn Store) -> Result<Zones> {
        let mut zones: HashMap<String, Zone> = HashMap::new();
        let mut vpc_of: HashMap<String, String> = HashMap::new();
        for kv in store.list_prefix(NAMESPACES).await? {
            let ns: Namespace = decode(&kv)?;
            let Ok(apex) = Name::from_ascii(format!("{}.", ns.name)) else { continue };
            vpc_of.insert(ns.id.clone(), ns.vpc.clone());
            let name = ns.name.to_ascii_lowercase();
            zones.insert(ns.id, Zone { name, apex, soa_ttl: ns.soa_ttl, services: HashMap::new() });
        }
        let mut service_zone: HashMap<String, (String, String)> = HashMap::new();
        for kv in store.list_prefix(SERVICES).await? {
            let service: Service = decode(&kv)?;
            let (Some(zone), Some(dns)) = (zones.get_mut(&service.namespace_id), service.dns) else { continue };
            let label = service.name.to_ascii_lowercase();
            service_zone.insert(service.id, (service.namespace_id, label.clone()));
            zone.services.insert(label, ZoneService { dns, instances: Vec::new() });
        }
        for kv in store.list_prefix(INSTANCES).await? {
            let instance: Instance = decode(&kv)?;
            let Some((ns, label)) = service_zone.get(&instance.service_id) else { continue };
            if let Some(service) = zones.get_mut(ns).and_then(|z| z.services.get_mut(label)) {
                service.instances.push(instance);
            }
        }
        let mut by_vpc: HashMap<String, Vec<Zone>> = HashMap::new();
        for (id, zone) in zones {
            by_vpc.entry(vpc_of.remove(&id).unwrap_or_default()).or_default().push(zone);
        }
        for list in by_vpc.values_mut() {
            list.sort_by_key(|z| std::cmp::Reverse(z.name.len()));
        }
        Ok(Zones { by_vpc })
    }

    /// The answer for `request` asked in `vpc`, or `None` when no zone of that VPC holds the
    /// name and the question should go upstream.
    pub(crate) fn answer(&self, vpc: &str, request: &Message) -> Option<Message> {
        let query = request.queries.first()?;
        if query.query_class() != DNSClass::IN {
            return None;
        }
        let qname = query.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
        let zone = self
            .by_vpc
            .get(vpc)?
            .iter()
            .find(|z| qname == z.name || qname.strip_suffix(&z.name).is_some_and(|rest| rest.ends_with('.')))?;
        let rest = qname[..qname.len() - zone.name.len()].trim_end_matches('.');

        let mut response = Message::response(request.id, request.op_code);
        response.metadata.authoritative = true;
        response.metadata.recursion_desired = request.recursion_desired;
        response.metadata.recursion_available = true;
        response.add_query(query.clone());
        if request.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            response.set_edns(edns);
        }
        let (found, records, additionals) = zone.lookup(rest, query.name(), query.query_type());
        if records.is_empty() {
            if !found {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.add_authority(zone.soa());
        }
        response.add_answers(records);
        response.add_additionals(additionals);
        Some(response)
    }
}

/// Healthy instances that have `attr`, or all that have it when none is healthy.
fn candidates<'a>(instances: &'a [Instance], attr: &str) -> Vec<&'a Instance> {
    let with: Vec<&Instance> = instances.iter().filter(|i| i.attributes.contains_key(attr)).collect();
    let healthy: Vec<&Instance> = with.iter().copied().filter(|i| i.health != HealthStatus::Unhealthy).collect();
    if healthy.is_empty() { with } else { healthy }
}

/// The instances one answer holds, as the routing policy picks them.
fn pick(policy: RoutingPolicy, mut instances: Vec<&Instance>) -> Vec<&Instance> {
    instances.shuffle(&mut rand::rng());
    instances.truncate(if policy == RoutingPolicy::Weighted { 1 } else { MAX_MULTIVALUE });
    instances
}

fn address_records(name: &Name, ttl: Option<u32>, ipv4: bool, instances: &[&Instance]) -> Vec<Record> {
    let Some(ttl) = ttl else { return Vec::new() };
    instances
        .iter()
        .filter_map(|i| {
            let rdata = if ipv4 {
                RData::A(A(i.attributes.get(ATTR_IPV4)?.parse::<Ipv4Addr>().ok()?))
            } else {
                RData::AAAA(AAAA(i.attributes.get(ATTR_IPV6)?.parse::<Ipv6Addr>().ok()?))
            };
            Some(Record::from_rdata(name.clone(), ttl, rdata))
        })
        .collect()
}

impl Zone {
    fn soa(&self) -> Record {
        let soa = SOA::new(
            Name::from_ascii("ns-1536.awsdns-00.co.uk.").expect("constant name"),
            Name::from_ascii("awsdns-hostmaster.amazon.com.").expect("constant name"),
            1,
            7200,
            900,
            1_209_600,
            86_400,
        );
        Record::from_rdata(self.apex.clone(), self.soa_ttl, RData::SOA(soa))
    }

    /// `(name exists, answers, additionals)` for `rest` (the name without the zone) and `qtype`.
    fn lookup(&self, rest: &str, qname: &Name, qtype: QueryType) -> (bool, Vec<Record>, Vec<Record>) {
        if rest.is_empty() {
            let soa = if matches!(qtype, QueryType::SOA | QueryType::ANY) { vec![self.soa()] } else { vec![] };
            return (true, soa, vec![]);
        }
        if let Some(service) = self.services.get(rest) {
            return service.answer(qname, qtype);
        }
        // `<instance-id>.<service>`: the target of an SRV record.
        if let Some((instance_id, label)) = rest.split_once('.')
            && let Some(service) = self.services.get(label)
            && service.dns.ttl(RecordType::Srv).is_some()
            && let Some(instance) = service.instances.iter().find(|i| i.id.eq_ignore_ascii_case(instance_id))
        {
            let mut records = Vec::new();
            if matches!(qtype, QueryType::A | QueryType::ANY) {
                records.extend(address_records(qname, service.dns.ttl(RecordType::A), true, &[instance]));
            }
            if matches!(qtype, QueryType::AAAA | QueryType::ANY) {
                records.extend(address_records(qname, service.dns.ttl(RecordType::Aaaa), false, &[instance]));
            }
            return (true, records, vec![]);
        }
        // A name with records below it exists even though it holds none itself.
        let below = format!(".{rest}");
        let exists = self.services.iter().any(|(k, s)| k.ends_with(&below) && !s.instances.is_empty());
        (exists, vec![], vec![])
    }
}

impl ZoneService {
    fn answer(&self, qname: &Name, qtype: QueryType) -> (bool, Vec<Record>, Vec<Record>) {
        // As in Route 53, the name exists only while some instance gives it records.
        let exists = !self.instances.is_empty();
        let policy = self.dns.routing_policy;
        if let Some(ttl) = self.dns.ttl(RecordType::Cname) {
            let target = pick(policy, candidates(&self.instances, ATTR_CNAME))
                .first()
                .and_then(|i| Name::from_ascii(format!("{}.", i.attributes[ATTR_CNAME].trim_end_matches('.'))).ok());
            let records = target.map(|t| Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(t))));
            return (exists, records.into_iter().collect(), vec![]);
        }
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        if matches!(qtype, QueryType::A | QueryType::ANY) {
            let chosen = pick(policy, candidates(&self.instances, ATTR_IPV4));
            answers.extend(address_records(qname, self.dns.ttl(RecordType::A), true, &chosen));
        }
        if matches!(qtype, QueryType::AAAA | QueryType::ANY) {
            let chosen = pick(policy, candidates(&self.instances, ATTR_IPV6));
            answers.extend(address_records(qname, self.dns.ttl(RecordType::Aaaa), false, &chosen));
        }
        if matches!(qtype, QueryType::SRV | QueryType::ANY)
            && let Some(ttl) = self.dns.ttl(RecordType::Srv)
        {
            for instance in pick(policy, candidates(&self.instances, ATTR_PORT)) {
                let Ok(port) = instance.attributes[ATTR_PORT].parse::<u16>() else { continue };
                let Ok(target) = Name::from_ascii(&instance.id).and_then(|n| n.append_domain(qname)) else { continue };
                answers.push(Record::from_rdata(qname.clone(), ttl, RData::SRV(SRV::new(1, 1, port, target.clone()))));
                additionals.extend(address_records(&target, self.dns.ttl(RecordType::A), true, &[instance]));
                additionals.extend(address_records(&target, self.dns.ttl(RecordType::Aaaa), false, &[instance]));
            }
        }
        (exists, answers, additionals)
    }
}
