"""A P4Runtime servicer that acknowledges every write and stores nothing: the raw limit's peer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from finsy.proto import p4r, p4r_grpc, rpc_code, rpc_status


class NullP4Runtime(p4r_grpc.P4RuntimeServicer):
    """Arbitration always grants primary; the pipeline config is remembered so the driver sees
    its own pipeline on Get; Write parses the request (as any server must) and answers OK;
    Read returns nothing."""

    def __init__(self, device_id: int = 1) -> None:
        self.device_id = device_id
        self.config: p4r.ForwardingPipelineConfig | None = None

    async def Capabilities(
        self, request: p4r.CapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> p4r.CapabilitiesResponse:
        return p4r.CapabilitiesResponse(p4runtime_api_version="1.4.0")

    async def StreamChannel(
        self,
        request_iterator: AsyncIterator[p4r.StreamMessageRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[p4r.StreamMessageResponse]:
        async for request in request_iterator:
            if request.WhichOneof("update") != "arbitration":
                continue
            update = p4r.MasterArbitrationUpdate(
                device_id=request.arbitration.device_id,
                status=rpc_status.Status(code=rpc_code.OK, message="primary"),
            )
            update.election_id.CopyFrom(request.arbitration.election_id)
            yield p4r.StreamMessageResponse(arbitration=update)

    async def SetForwardingPipelineConfig(
        self, request: p4r.SetForwardingPipelineConfigRequest, context: grpc.aio.ServicerContext
    ) -> p4r.SetForwardingPipelineConfigResponse:
        if request.action != p4r.SetForwardingPipelineConfigRequest.VERIFY:
            self.config = p4r.ForwardingPipelineConfig()
            self.config.CopyFrom(request.config)
        return p4r.SetForwardingPipelineConfigResponse()

    async def GetForwardingPipelineConfig(
        self, request: p4r.GetForwardingPipelineConfigRequest, context: grpc.aio.ServicerContext
    ) -> p4r.GetForwardingPipelineConfigResponse:
        if self.config is None:
            return p4r.GetForwardingPipelineConfigResponse()
        return p4r.GetForwardingPipelineConfigResponse(config=self.config)

    async def Write(
        self, request: p4r.WriteRequest, context: grpc.aio.ServicerContext
    ) -> p4r.WriteResponse:
        return p4r.WriteResponse()

    async def Read(
        self, request: p4r.ReadRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[p4r.ReadResponse]:
        for _ in ():  # an empty stream: nothing is stored
            yield p4r.ReadResponse()
