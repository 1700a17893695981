#!/usr/bin/python3
"""Real-client helper for the end-to-end tests (Debian's python3-libtorrent, libtorrent 2.0).

  lt_client.py make PATH TORRENT ANNOUNCE_URL [PIECE_LEN]
                                                   private v1 .torrent of a file or a directory
                                                   (multi-file); 16 KiB pieces by default
  lt_client.py make-hybrid FILE TORRENT            v1+v2 .torrent; prints "v1 v2 piece_length size"
  lt_client.py seed TORRENT DIR                    seed until killed; prints "seeding"
  lt_client.py leech TORRENT DIR TIMEOUT_SECS      download; prints "done" and exits 0
  lt_client.py bench-seed TORRENT DIR              seed; prints "seeding PORT"
  lt_client.py bench-leech TORRENT DIR PEER TIMEOUT_SECS
                                                   download from PEER (host:port) without a
                                                   tracker; prints "done SECONDS"

DHT, local discovery, UPnP and NAT-PMP are off, so the tracker is the only peer source.
"""
import sys
import time

import libtorrent as lt


def session(port, utp=True):
    return lt.session({
        # The benchmark compares TCP transfers (pbts-peer speaks no uTP).
        "enable_outgoing_utp": utp,
        "enable_incoming_utp": utp,
        "listen_interfaces": f"127.0.0.1:{port}",
        "enable_dht": False,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "allow_multiple_connections_per_ip": True,
        "announce_to_all_trackers": True,
        # libtorrent refuses HTTP announces to loopback unless the path is exactly /announce;
        # a passkey path is legitimate here.
        "ssrf_mitigation": False,
        "alert_mask": lt.alert.category_t.error_notification
        | lt.alert.category_t.tracker_notification
        | lt.alert.category_t.status_notification,
    })


def make(path, out, url, piece_len="16384"):
    fs = lt.file_storage()
    lt.add_files(fs, path)
    # v1 only: libtorrent 2.0 makes hybrid v1+v2 torrents by default, and aria2 speaks v1.
    t = lt.create_torrent(fs, int(piece_len), flags=lt.create_torrent.v1_only)
    if url:
        t.add_tracker(url)
    t.set_priv(True)
    import os
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(t.generate()))
    print(str(lt.torrent_info(out).info_hash()))


def make_hybrid(path, out):
    import os
    fs = lt.file_storage()
    lt.add_files(fs, path)
    t = lt.create_torrent(fs, 16384)  # libtorrent 2.0 default: hybrid v1 + v2
    lt.set_piece_hashes(t, os.path.dirname(os.path.abspath(path)))
    with open(out, "wb") as f:
        f.write(lt.bencode(t.generate()))
    ti = lt.torrent_info(out)
    hashes = ti.info_hashes()
    print(str(hashes.v1), str(hashes.v2), ti.piece_length(), ti.total_size())


def add(ses, torrent, save):
    return ses.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})


def log_alerts(ses):
    for a in ses.pop_alerts():
        if isinstance(a, (lt.tracker_error_alert, lt.tracker_reply_alert,
                          lt.tracker_warning_alert, lt.scrape_failed_alert)):
            print("alert:", a.message(), flush=True, file=sys.stderr)


def seed(torrent, save):
    ses = session(0)
    h = add(ses, torrent, save)
    h.force_recheck()
    announced = False
    while True:
        log_alerts(ses)
        st = h.status()
        if st.is_seeding and not announced:
            h.force_reannounce()
            print("seeding", flush=True)
            announced = True
        time.sleep(0.1)


def leech(torrent, save, timeout):
    ses = session(0)
    h = add(ses, torrent, save)
    deadline = time.time() + float(timeout)
    while time.time() < deadline:
        log_alerts(ses)
        st = h.status()
        if st.is_seeding:
            h.force_reannounce()
            time.sleep(0.5)
            log_alerts(ses)
            print("done", flush=True)
            return 0
        time.sleep(0.1)
    print("timeout: progress %.2f peers %d" % (h.status().progress, h.status().num_peers), flush=True)
    return 1


def bench_seed(torrent, save):
    ses = session(0, utp=False)
    h = add(ses, torrent, save)
    h.force_recheck()
    while not h.status().is_seeding:
        time.sleep(0.05)
    print("seeding", ses.listen_port(), flush=True)
    while True:
        time.sleep(1)


def bench_leech(torrent, save, peer, timeout):
    ses = session(0, utp=False)
    h = add(ses, torrent, save)
    host, port = peer.rsplit(":", 1)
    start = time.time()
    h.connect_peer((host, int(port)))
    deadline = start + float(timeout)
    while time.time() < deadline:
        if h.status().is_seeding:
            print("done %.3f" % (time.time() - start), flush=True)
            return 0
        time.sleep(0.01)
    print("timeout: progress %.2f" % h.status().progress, flush=True)
    return 1


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "make":
        make(*sys.argv[2:6])
    elif cmd == "bench-seed":
        bench_seed(*sys.argv[2:4])
    elif cmd == "bench-leech":
        sys.exit(bench_leech(*sys.argv[2:6]))
    elif cmd == "make-hybrid":
        make_hybrid(*sys.argv[2:4])
    elif cmd == "seed":
        seed(*sys.argv[2:4])
    elif cmd == "leech":
        sys.exit(leech(*sys.argv[2:5]))
    else:
        sys.exit("unknown command " + cmd)
