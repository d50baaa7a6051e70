// Package infra holds the deployment: template.yaml (one CloudFormation
// stack), Dockerfile (the container-image fallback) and al2023-libs.txt (the
// shared libraries the Lambda runtime provides). It has no code; its tests
// check the template's invariants and the artifacts scripts/package builds.
package infra
