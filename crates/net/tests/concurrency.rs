//! Interface changes run side by side (many tasks starting and stopping at once) and still
//! leave exactly what the same changes made one by one would (privileged: run as root).

mod common;

use anyhow::Result;
use common::*;
use flotilla_net::NetError;

const TASKS: usize = 12;

fn eni(i: usize) -> String {
    format!("eni-cc-{i}")
}

fn ip(i: usize) -> String {
    format!("10.62.1.{}", 10 + i)
}

#[test]
fn interfaces_made_and_removed_at_once_leave_nothing() -> Result<()> {
    let lab = Lab::new("cc")?;
    lab.vpc("vpc-cc", "10.62.0.0/16")?;
    lab.group("sg-cc", "vpc-cc", vec![tcp(80, "10.62.0.0/16")], vec![all_to("0.0.0.0/0")])?;
    let baseline = lab.host_snapshot()?;
    let namespaces: Vec<Netns> = (0..TASKS).map(|i| Netns::new(&format!("cc-t{i}"))).collect::<Result<_>>()?;
    let specs: Vec<_> = (0..TASKS)
        .map(|i| interface(&eni(i), "vpc-cc", &namespaces[i], &ip(i), &["sg-cc"], None))
        .collect::<Result<_>>()?;

    // All at once, twice over (the second pass finds them made: idempotent under concurrency too).
    for _ in 0..2 {
        std::thread::scope(|s| {
            let made: Vec<_> = specs.iter().map(|spec| s.spawn(|| lab.net.ensure_interface(spec))).collect();
            made.into_iter().try_for_each(|h| h.join().expect("no panic").map(drop))
        })?;
    }
    let listed = lab.net.list_interfaces()?;
    assert_eq!(listed.len(), TASKS, "{listed:?}");
    assert!(listed.iter().all(|i| i.link_present), "{listed:?}");
    let members = lab.nft(&["list", "set", "inet", "t_cc", "sgm_sg_cc"])?;
    for i in 0..TASKS {
        assert!(members.contains(&ip(i)), "{} is a member of its group: {members}", ip(i));
    }
    let _server = namespaces[0].listen(any_addr(80))?;
    assert!(namespaces[1].reaches(addr(&ip(0), 80)), "tasks made at once reach each other");

    // Half of them removed while the other half are made again.
    std::thread::scope(|s| {
        let handles: Vec<_> =
            specs
                .iter()
                .enumerate()
                .map(|(i, spec)| {
                    let net = &lab.net;
                    s.spawn(move || {
                        if i % 2 == 0 { net.remove_interface(&spec.id) } else { net.ensure_interface(spec).map(drop) }
                    })
                })
                .collect();
        handles.into_iter().try_for_each(|h| h.join().expect("no panic"))
    })?;
    let listed = lab.net.list_interfaces()?;
    assert_eq!(listed.len(), TASKS / 2, "{listed:?}");

    let net = &lab.net;
    std::thread::scope(|s| {
        let removed: Vec<_> = (0..TASKS).map(|i| s.spawn(move || net.remove_interface(&eni(i)))).collect();
        removed.into_iter().try_for_each(|h| h.join().expect("no panic"))
    })?;
    assert!(lab.net.list_interfaces()?.is_empty());
    assert_eq!(lab.host_snapshot()?, baseline, "nothing of the interfaces is left");
    Ok(())
}

/// A task's address goes to the next task only once its veth is gone: while the removal is in
/// flight the address is refused, and once it is accepted the old link no longer exists.
#[test]
fn an_address_is_not_taken_while_its_old_link_exists() -> Result<()> {
    let mut lab = Lab::new("ca")?;
    lab.vpc("vpc-ca", "10.63.0.0/16")?;
    lab.group("sg-ca", "vpc-ca", vec![], vec![all_to("0.0.0.0/0")])?;
    for round in 0..5 {
        let old = format!("eni-ca-old{round}");
        let new = format!("eni-ca-new{round}");
        let index = lab.task(&old, "vpc-ca", "10.63.1.10", &["sg-ca"], None)?;
        let old_link = status_of(&lab.net.list_interfaces()?, &old).expect("the old one is listed").host_link.clone();
        let ns = Netns::new(&format!("ca-new{round}"))?;
        let spec = interface(&new, "vpc-ca", &ns, "10.63.1.10", &["sg-ca"], None)?;
        let refused = std::thread::scope(|s| -> Result<usize> {
            let removal = s.spawn(|| lab.net.remove_interface(&old));
            let mut refused = 0;
            loop {
                match lab.net.ensure_interface(&spec) {
                    Ok(_) => break,
                    Err(NetError::AddressInUse { other, .. }) => {
                        assert_eq!(other, old);
                        refused += 1;
                        std::thread::yield_now();
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // Accepted: the old task's veth (and its task end) no longer exist.
            assert!(!lab.host.ip(&["-br", "link"])?.contains(&old_link), "{old_link} still exists");
            assert!(!lab.tasks[index].ip(&["-br", "link"])?.contains("eth0"));
            removal.join().expect("no panic")?;
            Ok(refused)
        })?;
        eprintln!("round {round}: refused {refused} time(s) while the old interface was going");
        lab.net.remove_interface(&new)?;
    }
    assert!(lab.net.list_interfaces()?.is_empty());
    Ok(())
}
