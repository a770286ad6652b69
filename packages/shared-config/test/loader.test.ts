import { chmodSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import {
  agentConfigSchema,
  DEFAULT_PORTS,
  globalMeshConfigSchema,
  loadConfigFile,
  parseConfig,
  parseConfigText,
  servicesSpecSchema,
} from '../src/index';
import { expectConfigError, makeTempDir } from './helpers';

const tmp = makeTempDir();
afterAll(() => tmp.cleanup());

describe('a config with three mistakes', () => {
  const file = tmp.write(
    'three-mistakes.yaml',
    [
      'node:', //                       1
      '  serviceName: user', //          2
      '  ip: 198.18.0.300', //           3  mistake 1: not an IP
      'ports:', //                       4
      '  agentAdmin: 15020', //          5
      '  dns: 70000', //                 6  mistake 2: out of range
      'registry:', //                    7
      '  backend: etcd', //              8
      '  etcd:', //                      9
      '    endpiont: [http://127.0.0.1:2379]', // 10  mistake 3: typo
      '',
    ].join('\n'),
  );

  it('gives one error naming all three paths with their lines', () => {
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, file, { env: {} }));
    expect(error.code).toBe('MESH_CONFIG_INVALID');
    expect(error.exitCode).toBe(2);
    expect(error.issues.map((i) => [i.path, i.line, i.file])).toEqual([
      ['node.ip', 3, file],
      ['ports.dns', 6, file],
      ['registry.etcd.endpiont', 10, file],
    ]);
    expect(error.message).toContain(`${file}:3: node.ip: expected an IPv4 or IPv6 address`);
    expect(error.message).toContain(`${file}:6: ports.dns: a port is 0..65535`);
    expect(error.message).toContain(`${file}:10: registry.etcd.endpiont: unknown field (did you mean "endpoints"?)`);
    expect(error.message.split('\n')[0]).toBe(`invalid configuration in ${file}: 3 problems`);
  });

  it('reports the same three mistakes in a JSON file, with JSON lines', () => {
    const json = tmp.write(
      'three-mistakes.json',
      JSON.stringify({ node: { serviceName: 'user', ip: '198.18.0.300' }, ports: { dns: 70000 }, registry: { etcd: { endpiont: [] } } }, null, 2),
    );
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, json, { env: {} }));
    expect(error.issues.map((i) => [i.path, i.line])).toEqual([
      ['node.ip', 4],
      ['ports.dns', 7],
      ['registry.etcd.endpiont', 11],
    ]);
  });
});

describe('TSF spec.yaml mistakes', () => {
  it('names nested list paths and lines; unknown keys are errors', () => {
    const text = [
      'apiVersion: v1',
      'kind: Application',
      'spec:',
      '  services:',
      '    - name: user',
      '      ports:',
      '        - targetPort: 0',
      '          protocl: http',
      '      healthCheck:',
      '        path: health',
      '',
    ].join('\n');
    const error = expectConfigError(() => parseConfigText(servicesSpecSchema, text, { source: 'spec.yaml' }));
    expect(error.issues).toEqual([
      { file: 'spec.yaml', line: 7, path: 'spec.services[0].ports[0].targetPort', message: 'a port is 1..65535' },
      { file: 'spec.yaml', line: 8, path: 'spec.services[0].ports[0].protocl', message: 'unknown field (did you mean "protocol"?)' },
      { file: 'spec.yaml', line: 10, path: 'spec.services[0].healthCheck.path', message: 'a health-check path starts with "/"' },
    ]);
  });

  it('points a missing required field at its parent', () => {
    const error = expectConfigError(() => parseConfigText(servicesSpecSchema, 'spec:\n  services:\n    - ports: [{ targetPort: 8089 }]\n'));
    expect(error.issues).toEqual([{ file: undefined, line: 3, path: 'spec.services[0].name', message: 'required field is missing' }]);
    expect(error.message).toContain('line 3: spec.services[0].name: required field is missing');
  });
});

describe('YAML and JSON', () => {
  it('give the same result for the same content', () => {
    const yamlFile = tmp.write('same.yaml', 'spec:\n  services:\n    - name: user\n      ports:\n        - targetPort: 8089\n      healthCheck: { path: /health }\n');
    const jsonFile = tmp.write('same.json', JSON.stringify({ spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }], healthCheck: { path: '/health' } }] } }));
    const fromYaml = loadConfigFile(servicesSpecSchema, yamlFile);
    expect(loadConfigFile(servicesSpecSchema, jsonFile)).toEqual(fromYaml);
    expect(fromYaml).toEqual({
      apiVersion: 'v1',
      kind: 'Application',
      spec: { services: [{ name: 'user', ports: [{ targetPort: 8089 }], healthCheck: { path: '/health' } }] },
    });
  });

  it('an empty file means every default', () => {
    const file = tmp.write('empty.yaml', '');
    expect(loadConfigFile(agentConfigSchema, file, { env: {} })).toEqual(parseConfig(agentConfigSchema, {}));
  });
});

describe('syntax errors and unreadable files', () => {
  it('a YAML syntax error reports its line', () => {
    const file = tmp.write('broken.yaml', 'node:\n  id: a\nports:\n  dns: [1, 2\nmesh:\n  vip: 240.240.0.1\n');
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, file, { env: {} }));
    expect(error.code).toBe('MESH_CONFIG_SYNTAX');
    expect(error.exitCode).toBe(2);
    expect(error.issues.length).toBeGreaterThan(0);
    expect(error.issues[0]).toMatchObject({ file, path: '' });
    expect(error.issues[0].line).toBeGreaterThanOrEqual(4);
    expect(error.issues[0].line).toBeLessThanOrEqual(5);
    expect(error.issues[0].message).toMatch(/^syntax error: /);
  });

  it('a JSON syntax error reports its line', () => {
    const file = tmp.write('broken.json', '{\n  "node": {\n    "id": "a",,\n  }\n}\n');
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, file, { env: {} }));
    expect(error.code).toBe('MESH_CONFIG_SYNTAX');
    expect(error.issues[0].line).toBe(3);
  });

  it('a duplicated key is a syntax error with its line', () => {
    const error = expectConfigError(() => parseConfigText(agentConfigSchema, 'ports:\n  dns: 1\n  dns: 2\n'));
    expect(error.issues[0].line).toBe(3);
    expect(error.issues[0].message).toMatch(/unique/i);
  });

  it('a missing file gives MESH_CONFIG_UNREADABLE naming the file', () => {
    const missing = `${tmp.dir}/does-not-exist.yaml`;
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, missing));
    expect(error.code).toBe('MESH_CONFIG_UNREADABLE');
    expect(error.exitCode).toBe(2);
    expect(error.message).toContain(`${missing}: (document): cannot read the configuration: file not found`);
  });

  it('a directory is not a config file', () => {
    const error = expectConfigError(() => loadConfigFile(agentConfigSchema, tmp.dir));
    expect(error.message).toContain('is a directory');
  });

  it('an unreadable file is reported (permission denied) unless running with CAP_DAC_OVERRIDE', () => {
    const file = tmp.write('secret.yaml', 'node: {}\n');
    chmodSync(file, 0o000);
    try {
      // root reads anything: then the load succeeds, which is right too
      if (process.getuid?.() === 0) expect(loadConfigFile(agentConfigSchema, file, { env: {} }).node.namespace).toBe('default');
      else expect(expectConfigError(() => loadConfigFile(agentConfigSchema, file)).message).toContain('permission denied');
    } finally {
      chmodSync(file, 0o600);
    }
  });

  it('optional: a missing file counts as empty, env still applies', () => {
    const config = loadConfigFile(agentConfigSchema, `${tmp.dir}/none.yaml`, { optional: true, env: { MESH_AGENT_NODE_IP: '198.18.0.9' } });
    expect(config.node.ip).toBe('198.18.0.9');
    expect(config.ports.dns).toBe(DEFAULT_PORTS.dns);
  });

  it('a document that is not a mapping is one issue at the top', () => {
    const error = expectConfigError(() => parseConfigText(globalMeshConfigSchema, '- a\n- b\n'));
    expect(error.issues).toHaveLength(1);
    expect(error.issues[0]).toMatchObject({ path: '', line: 1 });
    expect(error.message).toContain('(document): expected object, received array');
  });
});

describe('environment overrides', () => {
  const file = tmp.write('env.yaml', 'node:\n  ip: 198.18.0.2\n  serviceName: user\nregistry:\n  backend: file\ndns:\n  upstreams: [127.0.0.1]\n');

  it('documented variables override the file and convert their type', () => {
    const config = loadConfigFile(agentConfigSchema, file, {
      env: {
        MESH_AGENT_NODE_IP: '198.18.0.7',
        MESH_AGENT_REGISTRY_BACKEND: 'etcd',
        MESH_AGENT_ETCD_ENDPOINTS: 'http://127.0.0.1:23790, http://127.0.0.1:23791',
        MESH_AGENT_DNS_UPSTREAMS: '127.0.0.1:5353,[::1]:5353',
        MESH_AGENT_DNS_PORT: '15353',
        MESH_AGENT_IPTABLES: 'false',
        MESH_AGENT_CAPTURE_DNS: 'off',
        MESH_AGENT_LOG_LEVEL: 'debug',
        UNRELATED: 'x',
      },
    });
    expect(config.node).toEqual({ ip: '198.18.0.7', serviceName: 'user', namespace: 'default' });
    expect(config.registry.backend).toBe('etcd');
    expect(config.registry.etcd.endpoints).toEqual(['http://127.0.0.1:23790', 'http://127.0.0.1:23791']);
    expect(config.dns.upstreams).toEqual(['127.0.0.1:5353', '[::1]:5353']);
    expect(config.ports.dns).toBe(15353);
    expect(config.iptables.enabled).toBe(false);
    expect(config.iptables.captureDns).toBe(false);
    expect(config.log.level).toBe('debug');
  });

  it('an empty variable counts as unset', () => {
    expect(loadConfigFile(agentConfigSchema, file, { env: { MESH_AGENT_NODE_IP: '' } }).node.ip).toBe('198.18.0.2');
  });

  it('loadConfigFile reads process.env by default', () => {
    process.env.MESH_AGENT_NAMESPACE = 'prod';
    try {
      expect(loadConfigFile(agentConfigSchema, file).node.namespace).toBe('prod');
    } finally {
      delete process.env.MESH_AGENT_NAMESPACE;
    }
  });

  it('a bad value is blamed on its variable, together with the file mistakes', () => {
    const bad = tmp.write('env-bad.yaml', 'ports:\n  dns: -1\n');
    const error = expectConfigError(() =>
      loadConfigFile(agentConfigSchema, bad, { env: { MESH_AGENT_PROXY_UID: 'proxy', MESH_AGENT_REGISTRY_BACKEND: 'consul' } }),
    );
    expect(error.issues).toEqual([
      { file: bad, line: 2, path: 'ports.dns', message: 'a port is 0..65535' },
      { file: bad, path: 'proxy.uid', message: 'expected a numeric user/group id (from environment variable MESH_AGENT_PROXY_UID="proxy")' },
      { file: bad, path: 'registry.backend', message: 'expected one of file, etcd (from environment variable MESH_AGENT_REGISTRY_BACKEND="consul")' },
    ]);
  });

  it('parseConfig ignores the environment unless given one, and never changes its input', () => {
    process.env.MESH_AGENT_NODE_IP = '198.18.0.99';
    try {
      const input = { node: { ip: '198.18.0.2' } };
      expect(parseConfig(agentConfigSchema, input).node.ip).toBe('198.18.0.2');
      expect(parseConfig(agentConfigSchema, input, { env: { MESH_AGENT_NODE_IP: '198.18.0.3' } }).node.ip).toBe('198.18.0.3');
      expect(input).toEqual({ node: { ip: '198.18.0.2' } });
    } finally {
      delete process.env.MESH_AGENT_NODE_IP;
    }
  });

  it('schemas without documented variables are not affected', () => {
    const spec = tmp.write('spec.yaml', 'spec:\n  services: [{ name: user, ports: [{ targetPort: 8089 }] }]\n');
    expect(loadConfigFile(servicesSpecSchema, spec, { env: { MESH_AGENT_NODE_IP: '198.18.0.3' } })).not.toHaveProperty('node');
  });
});

describe('parseConfig with text', () => {
  it('maps issues to lines of the given text', () => {
    const text = 'timeouts:\n  connectMs: 0\nloadBalancing:\n  policy: ring_hash\n';
    const error = expectConfigError(() => parseConfig(globalMeshConfigSchema, { timeouts: { connectMs: 0 }, loadBalancing: { policy: 'ring_hash' } }, { text, source: 'mesh.yaml' }));
    expect(error.issues).toEqual([
      { file: 'mesh.yaml', line: 2, path: 'timeouts.connectMs', message: 'must be at least 1' },
      { file: 'mesh.yaml', line: 3, path: 'loadBalancing.hashHeader', message: 'policy ring_hash needs hashHeader' },
    ]);
  });

  it('without text, issues have no line', () => {
    const error = expectConfigError(() => parseConfig(agentConfigSchema, { ports: { dns: 'x' } }));
    expect(error.issues).toEqual([{ file: undefined, line: undefined, path: 'ports.dns', message: 'expected a port number (0..65535), got the string "x"' }]);
  });
});

describe('messages say what was found', () => {
  it('a quoted number is named as a string; a bad map key is named', () => {
    const text = 'timeouts:\n  connectMs: "1000"\nservices:\n  Order_Svc:\n    timeouts: { requestMs: 5 }\n';
    const error = expectConfigError(() => parseConfigText(globalMeshConfigSchema, text, { source: 'mesh.yaml' }));
    expect(error.issues).toEqual([
      { file: 'mesh.yaml', line: 2, path: 'timeouts.connectMs', message: 'expected a number, got the string "1000"' },
      {
        file: 'mesh.yaml',
        line: 4,
        path: 'services.Order_Svc',
        message: 'invalid key "Order_Svc": a service name is lower-case letters, digits, "-" and "."; it starts and ends with a letter or digit',
      },
    ]);
  });

  it('unknown top-level fields list the known ones when nothing is close', () => {
    const error = expectConfigError(() => parseConfigText(servicesSpecSchema, 'metadata: {}\nspec:\n  services: [{ name: a, ports: [{ targetPort: 1 }] }]\n'));
    expect(error.issues).toEqual([{ file: undefined, line: 1, path: 'metadata', message: 'unknown field; known fields: apiVersion, kind, spec' }]);
  });
});

describe('did-you-mean suggestions', () => {
  it('suggest only close names', () => {
    const issues = expectConfigError(() => parseConfig(agentConfigSchema, { node: { x: 1, serviecName: 'a' }, dns: { ttll: 1 }, log: { levle: 'info' } })).issues;
    expect(issues.map((i) => `${i.path}: ${i.message}`)).toEqual([
      'node.x: unknown field; known fields: id, serviceName, namespace, ip, ip6, labels, locality',
      'node.serviecName: unknown field (did you mean "serviceName"?)',
      'dns.ttll: unknown field (did you mean "ttl"?)',
      'log.levle: unknown field (did you mean "level"?)',
    ]);
  });
});

describe('hostile or odd YAML', () => {
  it('an alias bomb is refused as a syntax error, not expanded', () => {
    const bomb = ['a: &a [x,x,x,x,x,x,x,x,x]', 'b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]', 'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]', 'd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]', 'e: [*d,*d,*d,*d,*d,*d,*d,*d,*d]', ''].join('\n');
    const error = expectConfigError(() => parseConfigText(agentConfigSchema, bomb, { source: 'bomb.yaml' }));
    expect(error.code).toBe('MESH_CONFIG_SYNTAX');
    expect(error.message).toContain('bomb.yaml: (document): cannot resolve the document: Excessive alias count');
  });

  it('an alias to a missing anchor is a syntax error', () => {
    const error = expectConfigError(() => parseConfigText(agentConfigSchema, 'ports: *nope\n'));
    expect(error.code).toBe('MESH_CONFIG_SYNTAX');
  });

  it('anchors and aliases that resolve are fine', () => {
    const config = parseConfigText(agentConfigSchema, 'proxy: &ids { uid: 1337, gid: 1337 }\nmeshDns: *ids\n');
    expect(config.meshDns).toEqual({ uid: 1337, gid: 1337 });
  });
});

describe('basePath: validating part of a document', () => {
  it('issue paths and lines include where the part sits', () => {
    const text = 'services: []\nglobal:\n  timeouts:\n    connectMs: -1\n  retrys: {}\n';
    const error = expectConfigError(() =>
      parseConfig(globalMeshConfigSchema, { timeouts: { connectMs: -1 }, retrys: {} }, { text, source: 'PUT /update', basePath: ['global'] }),
    );
    expect(error.issues).toEqual([
      { file: 'PUT /update', line: 4, path: 'global.timeouts.connectMs', message: 'must be at least 1' },
      { file: 'PUT /update', line: 5, path: 'global.retrys', message: 'unknown field (did you mean "retries"?)' },
    ]);
  });
});
