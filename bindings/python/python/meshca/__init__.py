"""meshca: PKI for Istio multi-cluster trust.

A shared root, a ``cacerts`` intermediate per cluster, SPIFFE workload certificates as istiod
issues them, verification and rotation planning. The Rust core decides everything; this package
converts values, reads the clock (``now=None`` means the current time) and raises
:class:`MeshcaError` subclasses for bad input.

    >>> import meshca
    >>> root = meshca.SigningCa.generate_root()
    >>> c1 = root.issue_intermediate("cluster1")
    >>> leaf = meshca.SigningCa.from_cacerts(c1).issue_leaf("spiffe://cluster.local/ns/default/sa/app")
    >>> c1.verify_workload(leaf.cert_chain_pem)
    'spiffe://cluster.local/ns/default/sa/app'
"""

from ._meshca import AuditLog as AuditLog
from ._meshca import BundleInvalidError as BundleInvalidError
from ._meshca import Cacerts as Cacerts
from ._meshca import Crl as Crl
from ._meshca import CsrInvalidError as CsrInvalidError
from ._meshca import FileError as FileError
from ._meshca import InvalidParameterError as InvalidParameterError
from ._meshca import IssuanceError as IssuanceError
from ._meshca import KeyUnsupportedError as KeyUnsupportedError
from ._meshca import Leaf as Leaf
from ._meshca import MeshcaError as MeshcaError
from ._meshca import Pkcs11Error as Pkcs11Error
from ._meshca import ProviderError as ProviderError
from ._meshca import Plan as Plan
from ._meshca import PolicyInvalidError as PolicyInvalidError
from ._meshca import RotationPolicy as RotationPolicy
from ._meshca import SigningCa as SigningCa
from ._meshca import TrustChain as TrustChain
from ._meshca import TrustError as TrustError
from ._meshca import fleet_crl_set as fleet_crl_set
from ._meshca import make_csr as make_csr
from ._meshca import spiffe_bundle as spiffe_bundle
from ._meshca import verify_same_root as verify_same_root
from ._meshca import verify_workload_chain as verify_workload_chain

__all__ = [
    "AuditLog",
    "BundleInvalidError",
    "Cacerts",
    "Crl",
    "CsrInvalidError",
    "FileError",
    "InvalidParameterError",
    "IssuanceError",
    "KeyUnsupportedError",
    "Leaf",
    "MeshcaError",
    "Pkcs11Error",
    "ProviderError",
    "Plan",
    "PolicyInvalidError",
    "RotationPolicy",
    "SigningCa",
    "TrustChain",
    "TrustError",
    "fleet_crl_set",
    "make_csr",
    "spiffe_bundle",
    "verify_same_root",
    "verify_workload_chain",
]
