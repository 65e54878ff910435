"""One interface for every backend: `Runtime.run(np.ndarray) -> np.ndarray`, plus a registry."""

from resnet_deploy.runtimes.base import Artifact, Runtime, RuntimeSpec, create, registry, runtimes_for

__all__ = ["Artifact", "Runtime", "RuntimeSpec", "create", "registry", "runtimes_for"]
