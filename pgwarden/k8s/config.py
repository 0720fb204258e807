"""The injector's config file (``pgwarden webhook --config injector.yaml``).

Frozen attrs classes structured by a cattrs converter of their own, with the
same reading and error reporting as pgwarden.yaml (`pgwarden.config`): unknown
keys are errors, and every problem is reported at once with its line, key path
and what was expected.
"""

from __future__ import annotations

import os
import re
from decimal import Decimal
from typing import Literal, NewType

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, override

from pgwarden.config import parse_document, read_document, structure_string

# A PLACEHOLDER: nothing is published under this name. An injector config without
# sidecar.image injects pods that cannot pull it; build and push your own (make push).
DEFAULT_IMAGE = "ghcr.io/pgwarden/pgwarden:0.1.0"
DEFAULT_REQUESTS: dict[ResourceName, Quantity] = {"cpu": "100m", "memory": "128Mi"}  # type: ignore[dict-item]
DEFAULT_LIMITS: dict[ResourceName, Quantity] = {"cpu": "1", "memory": "256Mi"}  # type: ignore[dict-item]

# A Kubernetes quantity (resource.Quantity): a decimal number and a suffix.
_QUANTITY = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$")
_SCALE = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage")


def quantity(text: str) -> Decimal:
    """The value of a Kubernetes quantity such as ``100m``, ``128Mi`` or ``1e3``; ValueError if it is not one."""
    match = _QUANTITY.match(text)
    if match is None:
        raise ValueError(f"expected a Kubernetes quantity such as 100m, 1 or 128Mi, got {text!r}")
    number, suffix = match.group(1), match.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(number) * Decimal(10) ** int(suffix[1:])
    return Decimal(number) * _SCALE[suffix]


# Field types whose structure hooks check the value, so that a problem is reported
# at its own key (``listen.port``, ``sidecar.resources.requests.cpu``).
Port = NewType("Port", int)
PositiveInt = NewType("PositiveInt", int)
Image = NewType("Image", str)
NonEmpty = NewType("NonEmpty", str)
ResourceName = NewType("ResourceName", str)
Quantity = NewType("Quantity", str)


def _int(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _port(value, _type) -> int:
    if not 0 <= _int(value) <= 65535:
        raise ValueError(f"expected a TCP port (0-65535), got {value}")
    return value


def _positive(value, _type) -> int:
    if _int(value) <= 0:
        raise ValueError(f"expected a positive integer, got {value}")
    return value


def _text(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {value!r}")
    return str(value)


def _image(value, _type) -> str:
    text = _text(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected a container image reference, got {value!r}")
    return text


def _non_empty(value, _type) -> str:
    text = _text(value)
    if not text:
        raise ValueError("expected a non-empty string")
    return text


def _resource_name(value, _type) -> str:
    name = _text(value)
    if name not in _STANDARD_RESOURCES and not name.startswith("hugepages-") and "/" not in name:
        raise ValueError(f"expected cpu, memory, ephemeral-storage, hugepages-<size> or domain/name, got {name!r}")
    return name


def _quantity(value, _type) -> str:
    text = _text(value)  # YAML gives 1 or 0.5 for cpu: 1, cpu: 0.5
    quantity(text)
    return text


@attrs.frozen
class Listen:
    host: str = "0.0.0.0"
    port: Port = Port(8443)


@attrs.frozen
class TLS:
    # Re-read when they change (cert-manager renews the Secret behind them).
    cert_file: str
    key_file: str


@attrs.frozen
class Resources:
    requests: dict[ResourceName, Quantity] = attrs.Factory(lambda: dict(DEFAULT_REQUESTS))
    limits: dict[ResourceName, Quantity] = attrs.Factory(lambda: dict(DEFAULT_LIMITS))

    def __attrs_post_init__(self) -> None:
        # The API server refuses a pod whose request exceeds its limit: say so here, not per pod.
        for name, amount in self.requests.items():
            if name in self.limits and quantity(amount) > quantity(self.limits[name]):
                raise ValueError(f"expected requests.{name} ({amount}) not above limits.{name} "
                                 f"({self.limits[name]})")

    def as_kubernetes(self) -> dict:
        out = {}
        if self.requests:
            out["requests"] = dict(self.requests)
        if self.limits:
            out["limits"] = dict(self.limits)
        return out


@attrs.frozen
class Sidecar:
    image: Image = Image(DEFAULT_IMAGE)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Resources()


@attrs.frozen
class Agent:
    # PGDATABASE for pods without a pgwarden.dev/database annotation.
    database: NonEmpty = NonEmpty("appdb")


@attrs.frozen
class InjectorConfig:
    tls: TLS
    listen: Listen = Listen()
    # Larger AdmissionReview bodies get 413 (a pod is at most about 1.5 MB in etcd).
    max_request_bytes: PositiveInt = PositiveInt(1024 * 1024)
    sidecar: Sidecar = Sidecar()
    agent: Agent = Agent()
    #: where it was read from; set by load_injector_config
    source: str = attrs.field(default="<injector config>", metadata={"internal": True})


def _converter() -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=True)
    c.register_structure_hook(str, structure_string)  # (first: the functions made below take it)
    for newtype, hook in ((Port, _port), (PositiveInt, _positive), (Image, _image), (NonEmpty, _non_empty),
                          (ResourceName, _resource_name), (Quantity, _quantity)):
        c.register_structure_hook(newtype, hook)
    c.register_structure_hook(
        InjectorConfig,
        make_dict_structure_fn(InjectorConfig, c, _cattrs_forbid_extra_keys=True, source=override(omit=True)),
    )
    return c


_CONVERTER = _converter()


def parse_injector_config(text: str, source: str = "<injector config>") -> InjectorConfig:
    """Structures a YAML document, or raises `pgwarden.config.ConfigError` listing every problem."""
    config = parse_document(text, source, InjectorConfig, _CONVERTER, "tls:, listen:, sidecar:, agent:, ...")
    return attrs.evolve(config, source=source)


def load_injector_config(path: str | os.PathLike) -> InjectorConfig:
    return parse_injector_config(*read_document(path))
