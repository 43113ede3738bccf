//go:build tools

// Package tools pins the Kubernetes the lab and the tests build: the commands below, at the versions go.mod
// requires (k8s.io/kubernetes, its staging modules at the matching v0.X.Y, and etcd at the version Kubernetes pins).
// The control plane (etcd, kube-apiserver, kubectl) and the node (kube-controller-manager, kube-scheduler,
// kube-proxy, kubelet) come from the same module graph.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
