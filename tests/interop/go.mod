module derpd.test/interop

go 1.26.6

require tailscale.com v1.102.5

require (
	go4.org/mem v0.0.0-20240501181205-ae6ca9944745 // indirect
	golang.org/x/sys v0.47.0 // indirect
)
