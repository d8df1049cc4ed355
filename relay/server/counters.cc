#include "relay/server/counters.h"

#include "relay/server/types.h"

namespace derpd::server {

std::string_view to_string(DropReason r) {
  switch (r) {
    case DropReason::kUnknownDest: return "unknown_dest";
    case DropReason::kUnknownDestOnFwd: return "unknown_dest_on_fwd";
    case DropReason::kGoneDisconnected: return "gone_disconnected";
    case DropReason::kQueueHead: return "queue_head";
    case DropReason::kQueueTail: return "queue_tail";
    case DropReason::kWriteError: return "write_error";
    case DropReason::kDupClient: return "dup_client";
    case DropReason::kCount: break;
  }
  return "unknown";
}

std::string_view to_string(PacketKind k) {
  switch (k) {
    case PacketKind::kDisco: return "disco";
    case PacketKind::kOther: return "other";
    case PacketKind::kCount: break;
  }
  return "unknown";
}

std::string_view peer_gone_label(protocol::PeerGoneReason r) {
  switch (r) {
    case protocol::PeerGoneReason::kDisconnected: return "disconnected";
    case protocol::PeerGoneReason::kNotHere: return "not_here";
    case protocol::PeerGoneReason::kMeshConnBroke: return "mesh_conn_broke";
  }
  return "unknown";
}

std::string_view to_string(CloseReason r) {
  switch (r) {
    case CloseReason::kNotMeshPeer: return "not_mesh_peer";
    case CloseReason::kClosedByMeshPeer: return "closed_by_mesh_peer";
    case CloseReason::kWatcherBacklog: return "watcher_backlog";
    case CloseReason::kShutdown: return "shutdown";
    case CloseReason::kCount: break;
  }
  return "unknown";
}

std::uint64_t CounterTotals::dropped_total() const {
  std::uint64_t n = 0;
  for (const auto& row : packets_dropped)
    for (auto v : row) n += v;
  return n;
}

void ShardCounters::accumulate(CounterTotals& t) const {
  t.current_connections += current_connections.load();
  t.current_home_connections += current_home_connections.load();
  t.current_notideal_connections += current_notideal_connections.load();
  t.watchers += watchers.load();
  t.current_dup_client_keys += current_dup_client_keys.load();
  t.current_dup_client_conns += current_dup_client_conns.load();
  t.clients_total += clients_total.load();
  t.clients_local += clients_local.load();
  t.clients_remote += clients_remote.load();

  t.accepts += accepts.load();
  t.bytes_received += bytes_received.load();
  t.bytes_sent += bytes_sent.load();
  t.packets_received += packets_received.load();
  t.packets_sent += packets_sent.load();
  for (std::size_t k = 0; k < kPacketKinds; ++k) t.packets_received_kind[k] += packets_received_kind[k].load();
  for (std::size_t r = 0; r < kDropReasons; ++r) {
    for (std::size_t k = 0; k < kPacketKinds; ++k) {
      t.packets_dropped[r][k] += packets_dropped[r][k].load();
      t.bytes_dropped[r][k] += bytes_dropped[r][k].load();
    }
  }
  t.packets_forwarded_out += packets_forwarded_out.load();
  t.packets_forwarded_in += packets_forwarded_in.load();
  t.got_ping += got_ping.load();
  t.sent_pong += sent_pong.load();
  t.peer_gone_disconnected_frames += peer_gone_disconnected_frames.load();
  t.peer_gone_not_here_frames += peer_gone_not_here_frames.load();
  t.home_moves_in += home_moves_in.load();
  t.home_moves_out += home_moves_out.load();
  t.unknown_frames += unknown_frames.load();
  t.dup_client_conn_total += dup_client_conn_total.load();
  t.control_deferred += control_deferred.load();
  t.control_frames_dropped += control_frames_dropped.load();
  t.keepalives_sent += keepalives_sent.load();
  t.dup_switch_holds += dup_switch_holds.load();
  t.dup_switch_timeouts += dup_switch_timeouts.load();
}

}  // namespace derpd::server
