//go:build tools

// Package tools pins the control plane the lab and the tests build: the commands below, at the versions go.mod
// requires (k8s.io/kubernetes, its staging modules at the matching v0.X.Y, and etcd at the version Kubernetes pins).
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
