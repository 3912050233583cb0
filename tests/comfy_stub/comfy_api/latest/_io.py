"""Test stand-in for ``comfy_api.latest._io``: the V3 schema classes FaceMagic uses.

Signatures follow ComfyUI's (the newest: ``Schema.search_aliases`` and ``advanced`` on inputs, which
0.3.64 lacks); behaviour is reduced to what schema validation and ``execute``
need. ``ComfyNode.GET_SCHEMA`` validates like ComfyUI (unique input and output ids) and
fills in default output ids the same way.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class NumberDisplay(str, Enum):
    number = "number"
    slider = "slider"


class _IO:
    Parent: Any = None

    @property
    def io_type(self) -> str:
        return self.Parent.io_type


class Input(_IO):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        extra_dict: dict | None = None,
    ):
        self.id = id
        self.display_name = display_name
        self.optional = optional
        self.tooltip = tooltip
        self.lazy = lazy
        self.extra_dict = extra_dict or {}
        self.advanced: bool | None = None  # newer ComfyUI: an expert input, folded away by the frontend

    def get_io_type(self) -> str:
        return self.io_type

    def as_dict(self) -> dict[str, Any]:
        values = {
            "display_name": self.display_name,
            "tooltip": self.tooltip,
            "lazy": self.lazy,
            "advanced": self.advanced,
        }
        return {key: value for key, value in values.items() if value is not None} | self.extra_dict


class WidgetInput(Input):
    def __init__(
        self,
        id: str,
        display_name: str | None = None,
        optional: bool = False,
        tooltip: str | None = None,
        lazy: bool | None = None,
        default: Any = None,
        socketless: bool | None = None,
        widget_type: str | None = None,
        force_input: bool | None = None,
        extra_dict: dict | None = None,
    ):
        super().__init__(id, display_name, optional, tooltip, lazy, extra_dict)
        self.default = default
        self.socketless = socketless
        self.widget_type = widget_type
        self.force_input = force_input

    def as_dict(self) -> dict[str, Any]:
        values = super().as_dict()
        if self.default is not None:
            values["default"] = self.default
        if self.force_input:
            values["forceInput"] = True
        return values


class Output(_IO):
    def __init__(
        self,
        id: str | None = None,
        display_name: str | None = None,
        tooltip: str | None = None,
        is_output_list: bool = False,
    ):
        self.id = id
        self.display_name = display_name
        self.tooltip = tooltip
        self.is_output_list = is_output_list

    def get_io_type(self) -> str:
        return self.io_type


class ComfyTypeIO:
    io_type: str = ""
    Type: Any = Any

    class Input(Input):
        pass

    class Output(Output):
        pass


def comfytype(io_type: str):
    def decorate(cls):
        cls.io_type = io_type
        for name in ("Input", "Output"):
            inner = getattr(cls, name, None)
            if inner is not None:
                inner = type(inner.__name__, (inner,), {})
                inner.Parent = cls
                setattr(cls, name, inner)
        return cls

    return decorate


def Custom(io_type: str) -> type[ComfyTypeIO]:
    @comfytype(io_type)
    class CustomComfyType(ComfyTypeIO):
        pass

    return CustomComfyType


@comfytype("BOOLEAN")
class Boolean(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: bool | None = None,
            label_on: str | None = None,
            label_off: str | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            advanced: bool | None = None,
        ):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.advanced = advanced
            self.label_on = label_on
            self.label_off = label_off


@comfytype("INT")
class Int(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: int | None = None,
            min: int | None = None,
            max: int | None = None,
            step: int | None = None,
            control_after_generate: bool | None = None,
            display_mode: NumberDisplay | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            advanced: bool | None = None,
        ):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.advanced = advanced
            self.min, self.max, self.step = min, max, step
            self.control_after_generate = control_after_generate
            self.display_mode = display_mode


@comfytype("FLOAT")
class Float(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: float | None = None,
            min: float | None = None,
            max: float | None = None,
            step: float | None = None,
            round: float | None = None,
            display_mode: NumberDisplay | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            advanced: bool | None = None,
        ):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.advanced = advanced
            self.min, self.max, self.step, self.round = min, max, step, round
            self.display_mode = display_mode


@comfytype("STRING")
class String(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            multiline: bool = False,
            placeholder: str | None = None,
            default: str | None = None,
            dynamic_prompts: bool | None = None,
            socketless: bool | None = None,
            force_input: bool | None = None,
            advanced: bool | None = None,
        ):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, force_input)
            self.advanced = advanced
            self.multiline = multiline
            self.placeholder = placeholder
            self.dynamic_prompts = dynamic_prompts


@comfytype("COMBO")
class Combo(ComfyTypeIO):
    class Input(WidgetInput):
        def __init__(
            self,
            id: str,
            options: list[str] | list[int] | type[Enum] | None = None,
            display_name: str | None = None,
            optional: bool = False,
            tooltip: str | None = None,
            lazy: bool | None = None,
            default: str | int | Enum | None = None,
            control_after_generate: bool | None = None,
            upload: Any = None,
            image_folder: Any = None,
            remote: Any = None,
            socketless: bool | None = None,
            advanced: bool | None = None,
        ):
            if isinstance(options, type) and issubclass(options, Enum):
                options = [member.value for member in options]
            if isinstance(default, Enum):
                default = default.value
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless)
            self.advanced = advanced
            self.options = options
            self.control_after_generate = control_after_generate


@comfytype("IMAGE")
class Image(ComfyTypeIO):
    pass


@comfytype("MASK")
class Mask(ComfyTypeIO):
    pass


@comfytype("*")
class AnyType(ComfyTypeIO):
    pass


class Hidden(str, Enum):
    unique_id = "UNIQUE_ID"
    prompt = "PROMPT"
    extra_pnginfo = "EXTRA_PNGINFO"
    dynprompt = "DYNPROMPT"


class HiddenHolder:
    def __init__(
        self,
        unique_id: str | None = None,
        prompt: Any = None,
        extra_pnginfo: Any = None,
        dynprompt: Any = None,
        **kwargs: Any,
    ):
        self.unique_id = unique_id
        self.prompt = prompt
        self.extra_pnginfo = extra_pnginfo
        self.dynprompt = dynprompt

    def __getattr__(self, key: str) -> None:
        return None


@dataclass
class Schema:
    node_id: str
    display_name: str | None = None
    category: str = "sd"
    inputs: list[Input] = field(default_factory=list)
    outputs: list[Output] = field(default_factory=list)
    hidden: list[Hidden] = field(default_factory=list)
    description: str = ""
    is_input_list: bool = False
    is_output_node: bool = False
    is_deprecated: bool = False
    is_experimental: bool = False
    is_api_node: bool = False
    not_idempotent: bool = False
    enable_expand: bool = False
    search_aliases: list[str] = field(default_factory=list)  # newer ComfyUI: more words the node search matches

    def validate(self) -> None:
        input_ids = [item.id for item in self.inputs or []]
        output_ids = [item.id for item in self.outputs or []]
        issues = []
        for kind, ids in (("Input", input_ids), ("Output", output_ids)):
            duplicates = [item for item, count in Counter(ids).items() if count > 1]
            if duplicates:
                issues.append(f"{kind} ids must be unique, but {duplicates} are not.")
        shared = set(input_ids) & set(output_ids)  # ComfyUI 0.3.6x refuses these; newer releases allow them
        if shared:
            issues.append(f"Ids must be unique between inputs and outputs, but {shared} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def finalize(self) -> None:
        self.inputs = self.inputs or []
        self.outputs = self.outputs or []
        self.hidden = self.hidden or []
        if self.is_output_node:
            for hidden in (Hidden.prompt, Hidden.extra_pnginfo):
                if hidden not in self.hidden:
                    self.hidden.append(hidden)
        for number, output in enumerate(self.outputs):
            if output.id is None:
                output.id = f"_{number}_{output.io_type}_"


class NodeOutput:
    def __init__(self, *args: Any, ui: Any = None, expand: dict | None = None, block_execution: str | None = None):
        self.args = args
        self.ui = ui
        self.expand = expand
        self.block_execution = block_execution

    @property
    def result(self) -> tuple[Any, ...] | None:
        return self.args if self.args else None

    def __getitem__(self, index: int) -> Any:
        return self.args[index]


class ComfyNode:
    hidden: HiddenHolder = HiddenHolder()

    @classmethod
    def define_schema(cls) -> Schema:
        raise NotImplementedError

    @classmethod
    def execute(cls, **kwargs: Any) -> NodeOutput:
        raise NotImplementedError

    @classmethod
    def GET_SCHEMA(cls) -> Schema:  # ComfyUI's name
        schema = cls.define_schema()
        schema.finalize()
        schema.validate()
        return schema

    @classmethod
    def run(cls, unique_id: str = "1", **kwargs: Any) -> NodeOutput:
        """Call ``execute`` the way ComfyUI does (on a clone carrying the hidden inputs); stand-in only.

        As in ComfyUI, ``cls.hidden.unique_id`` is only set when the schema asks for ``Hidden.unique_id``.
        """
        declared = cls.GET_SCHEMA().hidden
        hidden = HiddenHolder(unique_id=unique_id if Hidden.unique_id in declared else None)
        clone = type(cls.__name__, (cls,), {"hidden": hidden})
        result = clone.execute(**kwargs)
        if isinstance(result, tuple):
            result = NodeOutput(*result)
        return result
