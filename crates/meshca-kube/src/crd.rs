//! The RootTrustPolicy custom resource in meshca's API group, with the same spec as Gloo Mesh's
//! `admin.gloo.solo.io/v2` policy (so the seed's YAML works after changing `apiVersion`).

use kube::core::{ApiResource, GroupVersionKind};

/// API group.
pub const GROUP: &str = "meshca.dev";
/// API version.
pub const VERSION: &str = "v1alpha1";
/// Kind.
pub const KIND: &str = "RootTrustPolicy";
/// Plural resource name.
pub const PLURAL: &str = "roottrustpolicies";

/// The resource for kube-rs's dynamic API.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The CustomResourceDefinition (`meshca crd | kubectl apply -f -`). The schema lets the API
/// server reject malformed policies early; meshca validates again and reports in `status`.
pub const CRD_YAML: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: roottrustpolicies.meshca.dev
  labels:
    app.kubernetes.io/managed-by: meshca
spec:
  group: meshca.dev
  names:
    kind: RootTrustPolicy
    listKind: RootTrustPolicyList
    plural: roottrustpolicies
    singular: roottrustpolicy
    shortNames: [rtp]
  scope: Namespaced
  versions:
  - name: v1alpha1
    served: true
    storage: true
    subresources:
      status: {}
    additionalPrinterColumns:
    - {name: State, type: string, jsonPath: .status.state}
    - {name: Rotation, type: string, jsonPath: .status.rotation.state}
    - {name: Next check, type: string, jsonPath: .status.nextCheck}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
    schema:
      openAPIV3Schema:
        type: object
        required: [spec]
        properties:
          spec:
            type: object
            required: [config]
            properties:
              config:
                type: object
                properties:
                  autoRestartPods: {type: boolean}
                  mgmtServerCa:
                    type: object
                    properties:
                      secretRef: &secretRef
                        type: object
                        required: [name]
                        properties:
                          name: {type: string}
                          namespace: {type: string}
                      generated:
                        type: object
                        properties: &certOptions
                          ttlDays: {type: integer, minimum: 1, maximum: 36500}
                          rsaKeySizeBytes: {type: integer, enum: [2048, 3072, 4096]}
                          keyAlgorithm: {type: string, enum: [ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096]}
                          orgName: {type: string}
                          secretRotationGracePeriodRatio: {type: number, exclusiveMinimum: true, minimum: 0, exclusiveMaximum: true, maximum: 1}
                          pathLen: {type: integer, minimum: 0, maximum: 255}
                  agentCa:
                    type: object
                    x-kubernetes-preserve-unknown-fields: true
                  intermediateCertOptions:
                    type: object
                    properties: *certOptions
                  passiveCertificateAuthorities:
                    type: array
                    items:
                      type: object
                      required: [secretRef]
                      properties:
                        secretRef: *secretRef
                  rootRotation:
                    type: object
                    required: [newMgmtServerCa]
                    properties:
                      newMgmtServerCa:
                        type: object
                        required: [secretRef]
                        properties:
                          secretRef: *secretRef
                      dwellHours: {type: integer, minimum: 0, maximum: 8760}
              applyToMeshes:
                type: array
                items:
                  type: object
                  x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            x-kubernetes-preserve-unknown-fields: true
"#;
