#include "relay/daemon/stun_service.h"

#include <cstring>

namespace derpd::daemon {

std::uint32_t StunService::add_site(const StunSite& site) {
  auto index = static_cast<std::uint32_t>(sites_.size());
  sites_.push_back(site);
  for (std::uint8_t ip = 0; ip < 2; ++ip)
    for (std::uint8_t port = 0; port < 2; ++port)
      if (io::UdpSocket* s = site.sockets[ip][port]) s->set_tag(index << 2 | std::uint32_t{ip} << 1 | port);
  return index;
}

void StunService::on_datagram(io::UdpSocket& sock, Bytes payload, const Endpoint& from, const Endpoint& local) {
  const std::uint32_t tag = sock.tag();
  if ((tag >> 2) >= sites_.size()) return;
  const StunSite& site = sites_[tag >> 2];
  const stun::SocketIndex received_on{static_cast<std::uint8_t>((tag >> 1) & 1), static_cast<std::uint8_t>(tag & 1)};

  (from.addr.is_v4() ? counters_.ipv4 : counters_.ipv6).inc();
  stun::Request req{payload, from, local, received_on};
  stun::Reply reply;
  stun::Disposition d = stun::respond(req, site.addrs, scratch_, reply);
  counters_.disposition[static_cast<std::size_t>(d)].inc();
  if (reply.size == 0 || reply.size > sizeof scratch_) return;

  io::UdpSocket* out = site.sockets[reply.send_from.ip & 1][reply.send_from.port & 1];
  if (out == nullptr) return;  // the responder never picks a socket that does not exist
  io::UdpSocket::SendSlot* slot = out->acquire();
  if (slot == nullptr) return;  // counted by the socket (send_busy)
  std::memcpy(slot->payload, scratch_, reply.size);
  // On a wildcard socket answer from the address that was asked (for a change-IP reply, from the
  // alternate IP the responder chose).
  IpAddr source = reply.send_from == received_on ? local.addr : site.addrs.ip[reply.send_from.ip & 1];
  out->send(slot, reply.size, reply.destination, source);
}

}  // namespace derpd::daemon
