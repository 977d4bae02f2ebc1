"""docs/manifest.md, generated from the manifest types so that the reference cannot drift from the code.

    python -m service.model.manifest_docs > docs/manifest.md
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from service.model.manifest_schema import TASK_SECTIONS, ManifestModel

INTRO = """# The model manifest (`manifest.json`), format 1

Generated from `service/model/manifest_schema.py` by `python -m service.model.manifest_docs`; the JSON
Schema of the same types is `docs/manifest.schema.json`. Every version folder
`exported/<model>/<version>/` holds a `manifest.json`; the server parses it once at load and refuses
the version, naming the file and the field, when the format is not 1, a field is missing or of the
wrong type, or a serving section has a key it does not know. Records (`data`, `training`, `metrics`,
and any other top-level key not listed here) are free-form JSON objects: shown by `Models.GetModel`,
never read to serve.
"""


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if origin is typing.Literal:
        return " or ".join(f"`{a}`" for a in typing.get_args(annotation))
    if origin is list:
        return f"list of {_type_name(typing.get_args(annotation)[0])}"
    if origin is dict:
        key, value = typing.get_args(annotation)
        return f"object {_type_name(key)} -> {_type_name(value)}"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"`{annotation.__name__}`"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return "empty" if not isinstance(value, BaseModel) else "defaults"
    return "absent" if field.default is None else f"`{field.default!r}`"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    """root and every section type it uses, in first-use order."""
    found: list[type[BaseModel]] = []

    def visit(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in found:
                found.append(annotation)
                for field in annotation.model_fields.values():
                    visit(field.annotation)
            return
        for argument in typing.get_args(annotation):
            visit(argument)

    visit(root)
    return found


def markdown() -> str:
    lines = [INTRO, "Sections each task needs beside `onnx` and `files`:", ""]
    lines += [f"- {task}: {', '.join(f'`{s}`' for s in sections)}" for task, sections in TASK_SECTIONS.items()]
    for model in _models(ManifestModel):
        lines += ["", f"## `{model.__name__}`", ""]
        doc = (model.__doc__ or "").strip()
        if doc:
            lines += [" ".join(doc.split()), ""]
        open_keys = model.model_config.get("extra") == "allow"
        lines += ["Other keys: allowed (records)." if open_keys else "Other keys: refused.", ""]
        lines += ["| field | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            meaning = " ".join((field.description or "").split())
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
