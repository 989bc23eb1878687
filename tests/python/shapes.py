"""Validates a raw response (JSON, or the XML of the form-encoded services) against a
botocore output shape, strictly.

botocore's parser silently drops members it does not know, so a response can "work" with the
SDK while carrying junk or wrong types. This walks the raw response instead: every member must
be in the shape, of the shape's type, within its enum, with required members present (JSON).
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


def local(tag):
    return tag.split("}", 1)[1] if tag.startswith("{") else tag


def xml_problems(shape, node, path):
    """Elements of `node` the shape does not allow; values of the wrong type."""
    out = []
    kind = shape.type_name
    if kind == "structure":
        by_name = {m.serialization.get("name", name): m for name, m in shape.members.items()}
        for child in node:
            name = local(child.tag)
            if name not in by_name:
                out.append(f"{path}/{name}: not in {shape.name}")
                continue
            out.extend(xml_problems(by_name[name], child, f"{path}/{name}"))
    elif kind == "list":
        item = shape.member.serialization.get("name", "member")
        for i, child in enumerate(node):
            if local(child.tag) != item:
                out.append(f"{path}[{i}]: <{local(child.tag)}> where <{item}> belongs")
            out.extend(xml_problems(shape.member, child, f"{path}[{i}]"))
    else:
        text = node.text or ""
        if len(node):
            out.append(f"{path}: {shape.name} is a {kind} but has child elements")
        elif kind == "boolean" and text not in ("true", "false"):
            out.append(f"{path}: {text!r} is not a boolean")
        elif kind in ("integer", "long"):
            try:
                int(text)
            except ValueError:
                out.append(f"{path}: {text!r} is not an integer")
        elif kind == "string" and shape.enum and text not in shape.enum:
            out.append(f"{path}: {text!r} not in enum {shape.name}")
    return out
