package nodeagent

import (
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestIPPool(t *testing.T) {
	type op struct {
		release   bool
		uid       types.UID
		annotated string
		previous  string
		want      string
		wantErr   bool
	}
	tests := []struct {
		name string
		cidr string
		ops  []op
	}{{
		name: "lowest free, skipping .0 and .1, stable per UID",
		cidr: "127.0.1.0/24",
		ops: []op{
			{uid: "a", want: "127.0.1.2"},
			{uid: "b", want: "127.0.1.3"},
			{uid: "a", want: "127.0.1.2"},
			{release: true, uid: "a"},
			{uid: "c", want: "127.0.1.2"},
		},
	}, {
		name: "annotation wins and is never handed out",
		cidr: "127.0.1.0/24",
		ops: []op{
			{uid: "etcd", annotated: "127.0.1.2", want: "127.0.1.2"},
			{uid: "x", want: "127.0.1.3"},
			{uid: "outside", annotated: "127.0.0.11", want: "127.0.0.11"},
			{uid: "bad", annotated: "not-an-ip", wantErr: true},
		},
	}, {
		name: "previous address kept after a restart when free",
		cidr: "127.0.1.0/24",
		ops: []op{
			{uid: "a", previous: "127.0.1.9", want: "127.0.1.9"},
			{uid: "b", previous: "127.0.1.9", want: "127.0.1.2"},
			{uid: "c", previous: "10.0.0.1", want: "127.0.1.3"},
		},
	}, {
		name: "exhaustion",
		cidr: "127.0.1.0/30",
		ops: []op{
			{uid: "a", want: "127.0.1.2"},
			{uid: "b", want: "127.0.1.3"},
			{uid: "c", wantErr: true},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := newIPPool(tt.cidr)
			if err != nil {
				t.Fatal(err)
			}
			for i, o := range tt.ops {
				if o.release {
					p.release(o.uid)
					continue
				}
				got, err := p.assign(o.uid, o.annotated, o.previous)
				if (err != nil) != o.wantErr || got != o.want {
					t.Fatalf("op %d: assign(%s) = %q, %v; want %q (error %v)", i, o.uid, got, err, o.want, o.wantErr)
				}
			}
		})
	}
	if _, err := newIPPool("::1/128"); err == nil {
		t.Error("IPv6 pool accepted")
	}
}
