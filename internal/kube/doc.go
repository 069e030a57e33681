// Package kube owns hcpsnap's access to the management cluster: loading the
// client configuration with the standard rules, and (in later files) the
// narrow interfaces the steps use to read objects, scale Deployments, exec
// into pods and open port-forwarded connections to them.
//
// Layer: adapter (Kubernetes and HyperShift). It imports no workflow.
package kube
