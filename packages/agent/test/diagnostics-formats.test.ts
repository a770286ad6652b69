// The parsers doctor and trace read the proxy's admin output and the kernel's rules with, on text in
// the exact formats of Envoy's /clusters, /listeners, /stats and of iptables-save -c.
import { describe, expect, it } from 'vitest';
import { matchVirtualHost, parseClustersText, parseIptablesSave, parseListenersText, parseStatsText, serviceOfCluster, virtualHostsFromConfigDump } from '../src/diagnostics/envoy-formats';

const CLUSTERS = `out#8089#order::default_priority::max_connections::1024
out#8089#order::default_priority::max_pending_requests::1024
out#8089#order::added_via_api::true
out#8089#order::198.18.0.3:8089::cx_active::0
out#8089#order::198.18.0.3:8089::rq_total::7
out#8089#order::198.18.0.3:8089::health_flags::healthy
out#8089#order::198.18.0.4:8089::rq_total::3
out#8089#order::198.18.0.4:8089::health_flags::/failed_active_hc
in#8089#user::127.0.0.1:8089::health_flags::healthy
`;

describe('diagnostics parsers', () => {
  it('reads /clusters text: hosts, their stats and health flags', () => {
    const clusters = parseClustersText(CLUSTERS);
    const order = clusters.get('out#8089#order')!;
    expect(order.settings['default_priority::max_connections']).toBe('1024');
    expect(order.hosts.map((h) => [h.address, h.healthy, h.stats.rq_total])).toEqual([['198.18.0.3:8089', true, '7'], ['198.18.0.4:8089', false, '3']]);
    expect(order.hosts[1].healthFlags).toBe('/failed_active_hc');
    expect(clusters.get('in#8089#user')!.hosts).toHaveLength(1);
  });

  it('reads /listeners and /stats text', () => {
    expect(parseListenersText('virtual::0.0.0.0:15001\n')).toEqual([{ name: 'virtual', address: '0.0.0.0:15001' }]);
    const stats = parseStatsText('cluster.out#8089#order.upstream_rq_total: 10\nserver.uptime: 5\nbad line\n');
    expect(stats.get('cluster.out#8089#order.upstream_rq_total')).toBe(10);
    expect(stats.size).toBe(2);
  });

  it('finds virtual hosts anywhere in /config_dump and matches a Host header', () => {
    const dump = { configs: [{ '@type': 'type.googleapis.com/envoy.admin.v3.RoutesConfigDump', static_route_configs: [{ route_config: { virtual_hosts: [
      { name: 'order', domains: ['order', 'order.default', 'order:80'], routes: [{ match: { prefix: '/' }, route: { cluster: 'out#8089#order' } }] },
      { name: 'split', domains: ['split'], routes: [{ match: { prefix: '/' }, route: { weightedClusters: [{ name: 'a', weight: 1 }, { name: 'b', weight: 1 }] } }] },
    ] } }] }] };
    const vhosts = virtualHostsFromConfigDump(dump);
    expect(vhosts.map((v) => v.name)).toEqual(['order', 'split']);
    expect(matchVirtualHost(vhosts, 'order:80')?.clusters).toEqual(['out#8089#order']);
    expect(matchVirtualHost(vhosts, 'order.default:8089')?.name).toBe('order');
    expect(matchVirtualHost(vhosts, 'split')?.clusters).toEqual(['a', 'b']);
    expect(matchVirtualHost(vhosts, 'nothing')).toBeUndefined();
  });

  it('reads iptables-save -c with packet counters', () => {
    const rules = parseIptablesSave(`*nat
:OUTPUT ACCEPT [0:0]
[3:180] -A OUTPUT -j ISTIO_OUTPUT
[1:60] -A ISTIO_OUTPUT -d 240.240.0.1/32 -p tcp -j DNAT --to-destination 198.18.0.2:15001
-A DNS_OUTPUT -p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354
COMMIT
`);
    expect(rules).toEqual([
      { chain: 'OUTPUT', spec: '-j ISTIO_OUTPUT', packets: 3 },
      { chain: 'ISTIO_OUTPUT', spec: '-d 240.240.0.1/32 -p tcp -j DNAT --to-destination 198.18.0.2:15001', packets: 1 },
      { chain: 'DNS_OUTPUT', spec: '-p udp -m udp --dport 53 -j DNAT --to-destination 127.0.0.1:55354' },
    ]);
  });

  it('names services from cluster names', () => {
    expect(serviceOfCluster('in#8089#user')).toEqual({ direction: 'in', port: 8089, service: 'user' });
    expect(serviceOfCluster('out#80#order')).toEqual({ direction: 'out', port: 80, service: 'order' });
    expect(serviceOfCluster('static')).toBeUndefined();
  });
});
