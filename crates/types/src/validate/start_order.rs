//! Start order: `dependsOn` conditions, and cycles through `dependsOn` and `volumesFrom`.

use super::container::Task;
use super::{Check, FieldError};
use crate::task_definition::ContainerDefinition;

/// A `NONE` health check disables the image's check, so the container never becomes HEALTHY.
fn has_health_check(c: &ContainerDefinition) -> bool {
    c.health_check.as_ref().is_some_and(|h| h.command.first().is_some_and(|kind| kind != "NONE"))
}

pub(super) fn check_depends_on(task: &Task, at: &str, i: usize, c: &ContainerDefinition) -> Check {
    for (j, dependency) in c.depends_on.iter().flatten().enumerate() {
        let at = format!("{at}.dependsOn[{j}]");
        let target_name = &dependency.container_name;
        let name_field = format!("{at}.containerName");
        let Some((target_index, target)) = task.container(target_name) else {
            return Err(FieldError::new(
                name_field,
                format!("must name another container of this task, got {target_name:?}"),
            ));
        };
        if target_index == i {
            return Err(FieldError::new(
                name_field,
                "must name another container; a container cannot depend on itself",
            ));
        }
        let field = format!("{at}.condition");
        match dependency.condition.as_str() {
            "START" => {}
            condition @ ("COMPLETE" | "SUCCESS") if target.is_essential() => {
                return Err(FieldError::new(
                    field,
                    format!(
                        "{condition} cannot target the essential container {target_name:?}, whose exit stops the task; mark it \"essential\": false or use START or HEALTHY"
                    ),
                ));
            }
            "COMPLETE" | "SUCCESS" => {}
            "HEALTHY" if !has_health_check(target) => {
                return Err(FieldError::new(
                    field,
                    format!("HEALTHY needs the container {target_name:?} to define a healthCheck"),
                ));
            }
            "HEALTHY" => {}
            other => {
                return Err(FieldError::new(
                    field,
                    format!("must be one of START, COMPLETE, SUCCESS, HEALTHY, got {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// Both `dependsOn` and `volumesFrom` make a container wait for another before it starts, so
/// a cycle through either would leave the task pending forever.
pub(super) fn check_cycles(task: &Task) -> Check {
    let edges: Vec<Vec<(usize, String)>> = task
        .containers()
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let at = format!("containerDefinitions[{i}]");
            let depends_on = c.depends_on.iter().flatten().enumerate().filter_map(|(j, d)| {
                let (target, _) = task.container(&d.container_name)?;
                Some((target, format!("{at}.dependsOn[{j}].containerName")))
            });
            let volumes_from = c.volumes_from.iter().flatten().enumerate().filter_map(|(j, v)| {
                let (source, _) = task.container(v.source_container.as_deref()?)?;
                Some((source, format!("{at}.volumesFrom[{j}].sourceContainer")))
            });
            depends_on.chain(volumes_from).collect()
        })
        .collect();
    for start in 0..edges.len() {
        let mut path = vec![start];
        let mut visited = vec![false; edges.len()];
        visited[start] = true;
        if !path_back_to(&edges, start, &mut visited, &mut path) {
            continue;
        }
        let name = |k: usize| task.containers()[k].name.as_deref().unwrap_or_default();
        let cycle: Vec<&str> = path.iter().map(|&k| name(k)).collect();
        // path[1] is the first hop; its edge is the member the user would edit.
        let field = edges[start]
            .iter()
            .find(|(target, _)| *target == path[1])
            .map(|(_, field)| field.clone())
            .unwrap_or_else(|| format!("containerDefinitions[{start}]"));
        return Err(FieldError::new(
            field,
            format!("containers wait for each other in a cycle ({}); break it", cycle.join(" -> ")),
        ));
    }
    Ok(())
}

/// Depth-first search from the last node of `path` back to `path[0]`, extending `path`.
fn path_back_to(edges: &[Vec<(usize, String)>], from: usize, visited: &mut [bool], path: &mut Vec<usize>) -> bool {
    for &(next, _) in &edges[from] {
        if next == path[0] {
            path.push(next);
            return true;
        }
        if !visited[next] {
            visited[next] = true;
            path.push(next);
            if path_back_to(edges, next, visited, path) {
                return true;
            }
            path.pop();
        }
    }
    false
}
