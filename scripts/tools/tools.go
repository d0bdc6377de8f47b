//go:build tools

// Package tools pins the test rack's Kubernetes binaries: the control plane, the
// node components (kubelet, kube-proxy) for hosts that run real pods, kubectl for
// side-by-side benchmarks, kwok for simulated nodes, and etcd with etcdctl and
// etcdutl for the fake k3s servers' embedded etcd (k3s v1.36 embeds etcd 3.6).
package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "go.etcd.io/etcd/etcdutl/v3"
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "sigs.k8s.io/kwok/cmd/kwok"
)
