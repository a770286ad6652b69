import type { AgentConfig, ProxyBootstrap } from '@mesh-agent/shared-config';

/**
 * The node's locality (agent config node.locality) travels with each instance it registers as
 * metadata `region`, `zone`, `subZone`; every proxy's bootstrap turns that back into the endpoint's
 * locality, so callers can prefer their own zone (docs/locality.md).
 */

type Locality = NonNullable<AgentConfig['node']['locality']>;
type EndpointLocality = NonNullable<ProxyBootstrap['clusters'][number]['endpoints'][number]['locality']>;

/** Instance metadata for the node's locality: only the parts that are set. */
export function localityMetadata(locality: Locality | undefined): Record<string, string> {
  if (!locality) return {};
  return {
    ...(locality.region ? { region: locality.region } : {}),
    ...(locality.zone ? { zone: locality.zone } : {}),
    ...(locality.subZone ? { subZone: locality.subZone } : {}),
  };
}

/** An endpoint's locality from the metadata its agent registered, or undefined when it registered none. */
export function endpointLocality(metadata: Readonly<Record<string, string>>): EndpointLocality | undefined {
  const { region, zone, subZone } = metadata;
  if (!region && !zone && !subZone) return undefined;
  return { ...(region ? { region } : {}), ...(zone ? { zone } : {}), ...(subZone ? { subZone } : {}) };
}
