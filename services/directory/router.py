"""The directory's handlers: one per kind of contact change (see the package docstring)."""

from __future__ import annotations

from shared.bus import Context, Router
from shared.schemas.inbound import (
    CreatePartyEvent,
    CreateUserEvent,
    DeletePartyEvent,
    DeleteUserEvent,
    UpdatePartyEvent,
    UpdateUserEvent,
)

__all__ = ["router"]

router = Router("directory")


@router.on(CreateUserEvent)
async def user_created(event: CreateUserEvent, ctx: Context) -> None:
    await ctx.directory.refresh_user(event.user_id)


@router.on(UpdateUserEvent)
async def user_updated(event: UpdateUserEvent, ctx: Context) -> None:
    """A changed UserID (NewUserID) moves the member: the old id is forgotten."""
    if event.new_user_id and event.new_user_id != event.user_id:
        await ctx.directory.forget_user(event.user_id)
    await ctx.directory.refresh_user(event.new_user_id or event.user_id)


@router.on(DeleteUserEvent)
async def user_deleted(event: DeleteUserEvent, ctx: Context) -> None:
    await ctx.directory.forget_user(event.user_id)


@router.on(CreatePartyEvent)
async def department_created(event: CreatePartyEvent, ctx: Context) -> None:
    await ctx.directory.refresh_department(event.id)


@router.on(UpdatePartyEvent)
async def department_updated(event: UpdatePartyEvent, ctx: Context) -> None:
    await ctx.directory.refresh_department(event.id)


@router.on(DeletePartyEvent)
async def department_deleted(event: DeletePartyEvent, ctx: Context) -> None:
    await ctx.directory.forget_department(event.id)
