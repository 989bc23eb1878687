"""Validates a raw JSON response against a botocore output shape, strictly.

botocore's parser silently drops members it does not know, so a response can "work" with the
SDK while carrying junk or wrong types. This walks the raw JSON instead: every member must be
in the shape, of the shape's type, within its enum, with required members present.
"""


import json


def strict(client, service):
    """Checks each successful raw response of `client` against its output shape, failing the
    call on any mismatch; returns the set of operation names checked so far."""
    seen = set()

    def check(operation_model, response_dict, **_):
        if response_dict["status_code"] >= 300:
            return
        body = json.loads(response_dict["body"] or b"{}")
        shape = operation_model.output_shape
        found = problems(shape, body) if shape is not None else ([] if body == {} else ["unexpected body"])
        assert not found, f"{operation_model.name}: " + "; ".join(found)
        seen.add(operation_model.name)

    client.meta.events.register(f"before-parse.{service}.*", check)
    return seen


def problems(shape, value, path="response"):
    out = []
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {type(value).__name__}"]
        for name, member_value in value.items():
            if name not in shape.members:
                out.append(f"{path}.{name}: not a member of {shape.name}")
                continue
            out.extend(problems(shape.members[name], member_value, f"{path}.{name}"))
        for name in shape.required_members:
            if name not in value:
                out.append(f"{path}.{name}: required by {shape.name} but missing")
    elif kind == "list":
        if not isinstance(value, list):
            return [f"{path}: expected list, got {type(value).__name__}"]
        for i, item in enumerate(value):
            out.extend(problems(shape.member, item, f"{path}[{i}]"))
    elif kind == "map":
        if not isinstance(value, dict):
            return [f"{path}: expected map, got {type(value).__name__}"]
        for k, v in value.items():
            out.extend(problems(shape.value, v, f"{path}.{k}"))
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected string, got {value!r}"]
        if shape.enum and value not in shape.enum:
            out.append(f"{path}: {value!r} not in enum {shape.name}")
    elif kind in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            out.append(f"{path}: expected integer, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            out.append(f"{path}: expected boolean, got {value!r}")
    elif kind in ("double", "float", "timestamp"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            out.append(f"{path}: expected number, got {value!r}")
    elif value is None:
        out.append(f"{path}: null")
    return out
