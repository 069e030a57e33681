// Package localenv starts and stops the local environment: a real management
// cluster (etcd, kube-apiserver, kube-controller-manager, the HyperShift CRDs),
// the two simulated pieces (node agent, operator stand-in), a real S3 server,
// and the hosted control plane laid out by package fixture. Every process runs
// on loopback in its own session, so Down can find and stop all of them, and
// everything they write lives under one state folder.
package localenv
