import { z } from 'zod';

/**
 * Docker's remote plugin protocol (libnetwork remote NetworkDriver and IpamDriver API, as Docker 20.10 sends
 * it): request and response bodies. Field names are Docker's.
 */

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

export interface ActivateResponse {
  Implements: string[];
}

// ---- IpamDriver ----
export interface RequestPoolRequest {
  AddressSpace: string;
  Pool: string;
  SubPool: string;
  Options: Record<string, string> | null;
  V6: boolean;
}
export interface RequestPoolResponse {
  PoolID: string;
  Pool: string;
  Data: Record<string, string>;
}
export interface ReleasePoolRequest {
  PoolID: string;
}
export interface RequestAddressRequest {
  PoolID: string;
  /** Requested address without prefix length ("" for any). */
  Address: string;
  Options: Record<string, string> | null;
}
export interface RequestAddressResponse {
  /** Address with prefix length. */
  Address: string;
  Data: Record<string, string>;
}
export interface ReleaseAddressRequest {
  PoolID: string;
  /** Address without prefix length. */
  Address: string;
}
/** RequestAddress Options key/value marking the network's gateway request. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_ADDRESS_TYPE = 'com.docker.network.gateway';

// ---- NetworkDriver ----
export interface IPAMData {
  AddressSpace: string;
  Pool: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}
export interface CreateNetworkRequest {
  NetworkID: string;
  Options: Record<string, unknown> | null;
  IPv4Data: IPAMData[] | null;
  IPv6Data: IPAMData[] | null;
}
export interface DeleteNetworkRequest {
  NetworkID: string;
}
export interface EndpointInterface {
  Address: string;
  AddressIPv6: string;
  MacAddress: string;
}
export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface: EndpointInterface | null;
  Options: Record<string, unknown> | null;
}
export interface CreateEndpointResponse {
  Interface: Partial<EndpointInterface> | null;
}
export interface EndpointRequest {
  NetworkID: string;
  EndpointID: string;
}
export interface JoinRequest extends EndpointRequest {
  SandboxKey: string;
  Options: Record<string, unknown> | null;
}
export interface StaticRoute {
  Destination: string;
  /** 0: via NextHop; 1: directly connected. */
  RouteType: 0 | 1;
  NextHop?: string;
}
export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway: string;
  GatewayIPv6: string;
  StaticRoutes: StaticRoute[];
  DisableGatewayService: boolean;
}

// ---- Validation ----
// Docker's bodies are untrusted like any other input: each call's body is checked before its handler runs
// and a bad one is answered 400 {"Err": "weft: invalid <call> request: <field>: …"}. The objects are loose
// (fields newer Dockers add are let through) and fields Docker may leave out or send as null are optional.

const str = z.string().max(1024);
const options = z.record(z.string(), z.unknown()).nullable().optional();
const ipamData = z.looseObject({ AddressSpace: str.optional(), Pool: str, Gateway: str.optional(), AuxAddresses: options });
const endpointRequest = z.looseObject({ NetworkID: str, EndpointID: str, Options: options });
/** Calls that carry nothing weft reads (Activate, capabilities, discovery). */
const anyCall = z.looseObject({});

/** The schema of each plugin call's request body, by URL path. */
export const PLUGIN_REQUEST_SCHEMAS: Record<string, z.ZodType> = {
  '/Plugin.Activate': anyCall,
  '/NetworkDriver.GetCapabilities': anyCall,
  '/NetworkDriver.CreateNetwork': z.looseObject({
    NetworkID: str,
    Options: options,
    IPv4Data: z.array(ipamData).max(64).nullable().optional(),
    IPv6Data: z.array(ipamData).max(64).nullable().optional(),
  }),
  '/NetworkDriver.DeleteNetwork': z.looseObject({ NetworkID: str }),
  '/NetworkDriver.CreateEndpoint': z.looseObject({
    NetworkID: str,
    EndpointID: str,
    Interface: z.looseObject({ Address: str.optional(), AddressIPv6: str.optional(), MacAddress: str.optional() }).nullable().optional(),
    Options: options,
  }),
  '/NetworkDriver.EndpointOperInfo': endpointRequest,
  '/NetworkDriver.DeleteEndpoint': endpointRequest,
  '/NetworkDriver.Join': endpointRequest.extend({ SandboxKey: str.optional() }),
  '/NetworkDriver.Leave': endpointRequest,
  '/NetworkDriver.DiscoverNew': anyCall,
  '/NetworkDriver.DiscoverDelete': anyCall,
  '/NetworkDriver.ProgramExternalConnectivity': endpointRequest,
  '/NetworkDriver.RevokeExternalConnectivity': endpointRequest,
  '/IpamDriver.GetCapabilities': anyCall,
  '/IpamDriver.GetDefaultAddressSpaces': anyCall,
  '/IpamDriver.RequestPool': z.looseObject({
    AddressSpace: str.optional(),
    Pool: str.optional(),
    SubPool: str.optional(),
    Options: options,
    V6: z.boolean().optional(),
  }),
  '/IpamDriver.ReleasePool': z.looseObject({ PoolID: str }),
  '/IpamDriver.RequestAddress': z.looseObject({ PoolID: str, Address: str.optional(), Options: options }),
  '/IpamDriver.ReleaseAddress': z.looseObject({ PoolID: str, Address: str }),
};
